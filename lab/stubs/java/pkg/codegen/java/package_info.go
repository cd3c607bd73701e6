// Package java stands in for pulumi-java's codegen package, which the module proxy refuses:
// pulumi-docker-build uses only this struct, to describe its Java SDK in its schema.
package java

// PackageInfo is the Java section of a package schema's "language" map.
type PackageInfo struct {
	BasePackage                     string            `json:"basePackage"`
	BuildFiles                      string            `json:"buildFiles"`
	Dependencies                    map[string]string `json:"dependencies,omitempty"`
	GradleNexusPublishPluginVersion string            `json:"gradleNexusPublishPluginVersion"`
	GradleTest                      string            `json:"gradleTest"`
}
