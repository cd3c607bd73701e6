// Package codegen stands in for pulumi-language-dotnet's codegen package, which the module proxy
// refuses: pulumi-docker-build uses only this struct, to describe its C# SDK in its schema.
package codegen

// CSharpPackageInfo is the C# section of a package schema's "language" map.
type CSharpPackageInfo struct {
	PackageReferences    map[string]string `json:"packageReferences,omitempty"`
	RespectSchemaVersion bool              `json:"respectSchemaVersion,omitempty"`
}
