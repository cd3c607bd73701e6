// Command psa-check evaluates the pod template of every Kubernetes object it reads against the Pod
// Security Standards' "restricted" level at the latest version, with the checks the kube-apiserver's
// PodSecurity admission runs (k8s.io/pod-security-admission/policy). It reads YAML or JSON documents
// (a Pod, a workload with a pod template, or a List of them) from the files named, or stdin, prints
// one line per forbidden check, `Kind/name: checkID: reason (detail)`, and exits 1 if any pod is
// refused, 2 if the input cannot be read.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

var restricted = api.LevelVersion{Level: api.LevelRestricted, Version: api.LatestVersion()}

// check is one of the checks that restricted runs, with an evaluator of its own so a refusal can be
// named by its ID (EvaluatePod's results do not carry one).
type check struct {
	id        policy.CheckID
	evaluator policy.Evaluator
}

func main() {
	all, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		fail(err)
	}
	checks, err := restrictedChecks()
	if err != nil {
		fail(err)
	}
	inputs := os.Args[1:]
	if len(inputs) == 0 {
		inputs = []string{"-"}
	}
	refused := false
	for _, name := range inputs {
		docs, err := documents(name)
		if err != nil {
			fail(err)
		}
		for _, doc := range docs {
			objects, err := decode(doc)
			if err != nil {
				fail(fmt.Errorf("%s: %w", name, err))
			}
			for _, o := range objects {
				if o.spec == nil {
					continue // no pod template: nothing for PodSecurity to check
				}
				lines, err := evaluate(all, checks, o)
				if err != nil {
					fail(err)
				}
				for _, line := range lines {
					fmt.Println(line)
				}
				refused = refused || len(lines) > 0
			}
		}
	}
	if refused {
		os.Exit(1)
	}
}

// restrictedChecks are the checks restricted runs at the latest version: every restricted check
// and the baseline ones no restricted check overrides (as policy's registry composes them).
func restrictedChecks() ([]check, error) {
	defaults := policy.DefaultChecks()
	overridden := map[policy.CheckID]bool{}
	for _, c := range defaults {
		if c.Level == api.LevelRestricted {
			for _, id := range c.Versions[len(c.Versions)-1].OverrideCheckIDs {
				overridden[id] = true
			}
		}
	}
	var checks []check
	for _, c := range defaults {
		if overridden[c.ID] {
			continue
		}
		e, err := policy.NewEvaluator([]policy.Check{c}, nil)
		if err != nil {
			return nil, err
		}
		checks = append(checks, check{c.ID, e})
	}
	return checks, nil
}

type object struct {
	kind, name string
	meta       *metav1.ObjectMeta
	spec       *corev1.PodSpec
}

// evaluate returns a line per check that refuses o's pod. The verdict is the full evaluator's, as
// the admission plugin reaches it; the per-check evaluators only name the checks and must agree.
func evaluate(all policy.Evaluator, checks []check, o object) ([]string, error) {
	verdict := policy.AggregateCheckResults(all.EvaluatePod(restricted, o.meta, o.spec))
	var lines []string
	for _, c := range checks {
		for _, r := range c.evaluator.EvaluatePod(restricted, o.meta, o.spec) {
			if r.Allowed {
				continue
			}
			line := fmt.Sprintf("%s/%s: %s: %s", o.kind, o.name, c.id, r.ForbiddenReason)
			if r.ForbiddenDetail != "" {
				line += " (" + r.ForbiddenDetail + ")"
			}
			lines = append(lines, line)
		}
	}
	if len(lines) != len(verdict.ForbiddenReasons) {
		return nil, fmt.Errorf("%s/%s: the checks one by one refuse %d times, all together %d: %s",
			o.kind, o.name, len(lines), len(verdict.ForbiddenReasons), verdict.ForbiddenDetail())
	}
	return lines, nil
}

func documents(name string) ([][]byte, error) {
	var r io.Reader = os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var docs [][]byte
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		docs = append(docs, doc)
	}
}

// decode reads one document strictly (an unknown or duplicate field is an error, names matched
// case by case, as the API server's strict field validation has it), and finds the pod template
// the way the admission plugin's DefaultPodSpecExtractor does, for the same kinds.
func decode(doc []byte) ([]object, error) {
	data, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, err
	}
	var head struct {
		Kind  string            `json:"kind"`
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, err
	}
	if head.Kind == "" {
		return nil, nil // an empty document
	}
	if strings.HasSuffix(head.Kind, "List") { // List, PodList, DeploymentList...
		var objects []object
		for _, item := range head.Items {
			o, err := decode(item)
			if err != nil {
				return nil, err
			}
			objects = append(objects, o...)
		}
		return objects, nil
	}
	var (
		meta metav1.ObjectMeta
		tmpl *corev1.PodTemplateSpec
	)
	switch head.Kind {
	case "Pod":
		var o corev1.Pod
		err = strict(data, &o)
		meta, tmpl = o.ObjectMeta, &corev1.PodTemplateSpec{ObjectMeta: o.ObjectMeta, Spec: o.Spec}
	case "PodTemplate":
		var o corev1.PodTemplate
		err = strict(data, &o)
		meta, tmpl = o.ObjectMeta, &o.Template
	case "ReplicationController":
		var o corev1.ReplicationController
		err = strict(data, &o)
		meta, tmpl = o.ObjectMeta, o.Spec.Template
	case "ReplicaSet":
		var o appsv1.ReplicaSet
		err = strict(data, &o)
		meta, tmpl = o.ObjectMeta, &o.Spec.Template
	case "Deployment":
		var o appsv1.Deployment
		err = strict(data, &o)
		meta, tmpl = o.ObjectMeta, &o.Spec.Template
	case "DaemonSet":
		var o appsv1.DaemonSet
		err = strict(data, &o)
		meta, tmpl = o.ObjectMeta, &o.Spec.Template
	case "StatefulSet":
		var o appsv1.StatefulSet
		err = strict(data, &o)
		meta, tmpl = o.ObjectMeta, &o.Spec.Template
	case "Job":
		var o batchv1.Job
		err = strict(data, &o)
		meta, tmpl = o.ObjectMeta, &o.Spec.Template
	case "CronJob":
		var o batchv1.CronJob
		err = strict(data, &o)
		meta, tmpl = o.ObjectMeta, &o.Spec.JobTemplate.Spec.Template
	default:
		return []object{{kind: head.Kind}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", head.Kind, err)
	}
	o := object{kind: head.Kind, name: meta.Name}
	if tmpl != nil {
		o.meta, o.spec = &tmpl.ObjectMeta, &tmpl.Spec
	}
	return []object{o}, nil
}

func strict(data []byte, v any) error {
	problems, err := kjson.UnmarshalStrict(data, v)
	return errors.Join(append(problems, err)...)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "psa-check:", err)
	os.Exit(2)
}
