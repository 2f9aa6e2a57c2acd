// Command netslo-gitops-health says what GitOps tools conclude about Kubernetes objects, using
// the tools' own health code rather than a re-implementation of it:
//
//	kstatus  sigs.k8s.io/cli-utils status.Compute: Flux's `wait: true` and `healthChecks`
//	         without healthCheckExprs, and Helm 4's `--wait`
//	flux     github.com/fluxcd/pkg/runtime/cel: the healthCheckExprs of the Flux Kustomization
//	         in --flux-kustomization, for the object's group and kind
//	argocd   the Lua health check in the argocd-cm ConfigMap in --argocd-cm, for the object's
//	         group and kind, run on gopher-lua as Argo CD's util/lua runs it
//
// It reads objects as JSON, one per line, on stdin and writes one JSON line per object:
//
//	{"kstatus":{"status":"Current","message":"..."},"flux":{...},"argocd":{...}}
//
// An evaluator's error is reported as its status "Error" with the error as the message.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/fluxcd/pkg/apis/kustomize"
	fluxcel "github.com/fluxcd/pkg/runtime/cel"
	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type answer struct {
	Kstatus verdict `json:"kstatus"`
	Flux    verdict `json:"flux"`
	ArgoCD  verdict `json:"argocd"`
}

func main() {
	fluxFile := flag.String("flux-kustomization", "", "a Flux Kustomization whose spec.healthCheckExprs to evaluate")
	argoFile := flag.String("argocd-cm", "", "an argocd-cm ConfigMap whose resource.customizations.health.* to run")
	flag.Parse()
	if *fluxFile == "" || *argoFile == "" {
		fail("usage: netslo-gitops-health --flux-kustomization FILE --argocd-cm FILE < objects.jsonl")
	}
	exprs, err := readHealthCheckExprs(*fluxFile)
	if err != nil {
		fail(err.Error())
	}
	scripts, err := readArgoHealthScripts(*argoFile)
	if err != nil {
		fail(err.Error())
	}

	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		line := strings.TrimSpace(in.Text())
		if line == "" {
			continue
		}
		// UnmarshalJSON keeps integers int64, as the API machinery's decoders do; kstatus'
		// generation check reads them with NestedInt64.
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON([]byte(line)); err != nil {
			fail(fmt.Sprintf("reading an object: %v", err))
		}
		gk := u.GroupVersionKind().GroupKind()
		if err := out.Encode(answer{
			Kstatus: kstatusVerdict(u),
			Flux:    fluxVerdict(exprs, gk, u),
			ArgoCD:  argoVerdict(scripts, gk, u),
		}); err != nil {
			fail(err.Error())
		}
	}
	if err := in.Err(); err != nil {
		fail(err.Error())
	}
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, "netslo-gitops-health:", message)
	os.Exit(2)
}

func kstatusVerdict(u *unstructured.Unstructured) verdict {
	result, err := status.Compute(u)
	if err != nil {
		return verdict{Status: "Error", Message: err.Error()}
	}
	return verdict{Status: result.Status.String(), Message: result.Message}
}

// readHealthCheckExprs reads spec.healthCheckExprs of a Flux Kustomization, keyed by the group
// and kind each applies to (Flux ignores the version).
func readHealthCheckExprs(path string) (map[schema.GroupKind]kustomize.HealthCheckExpressions, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var kustomization struct {
		Spec struct {
			HealthCheckExprs []kustomize.CustomHealthCheck `json:"healthCheckExprs"`
		} `json:"spec"`
	}
	// The rest of the Kustomization is Flux's to validate: only healthCheckExprs is read.
	if err := yaml.Unmarshal(raw, &kustomization); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	exprs := map[schema.GroupKind]kustomize.HealthCheckExpressions{}
	for _, check := range kustomization.Spec.HealthCheckExprs {
		gv, err := schema.ParseGroupVersion(check.APIVersion)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		exprs[schema.GroupKind{Group: gv.Group, Kind: check.Kind}] = check.HealthCheckExpressions
	}
	if len(exprs) == 0 {
		return nil, fmt.Errorf("%s: no spec.healthCheckExprs", path)
	}
	return exprs, nil
}

func fluxVerdict(exprs map[schema.GroupKind]kustomize.HealthCheckExpressions, gk schema.GroupKind, u *unstructured.Unstructured) verdict {
	expressions, found := exprs[gk]
	if !found {
		return verdict{Status: "Error", Message: "no healthCheckExprs for " + gk.String()}
	}
	evaluator, err := fluxcel.NewStatusEvaluator(&expressions)
	if err != nil {
		return verdict{Status: "Error", Message: err.Error()}
	}
	result, err := evaluator.Evaluate(context.Background(), u)
	if err != nil {
		// Flux's status reader reports an evaluation error as Unknown and keeps waiting.
		return verdict{Status: "Error", Message: err.Error()}
	}
	return verdict{Status: result.Status.String(), Message: result.Message}
}

// readArgoHealthScripts reads the resource.customizations.health.<group>_<Kind> keys of an
// argocd-cm ConfigMap, as Argo CD's settings do.
func readArgoHealthScripts(path string) (map[schema.GroupKind]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var configMap struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(raw, &configMap); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	const prefix = "resource.customizations.health."
	scripts := map[schema.GroupKind]string{}
	for key, script := range configMap.Data {
		groupKind, found := strings.CutPrefix(key, prefix)
		if !found {
			continue
		}
		group, kind, found := strings.Cut(groupKind, "_")
		if !found {
			return nil, fmt.Errorf("%s: %s is not %s<group>_<Kind>", path, key, prefix)
		}
		scripts[schema.GroupKind{Group: group, Kind: kind}] = script
	}
	if len(scripts) == 0 {
		return nil, fmt.Errorf("%s: no %s* key", path, prefix)
	}
	return scripts, nil
}

// The health statuses Argo CD accepts from a script (gitops-engine pkg/health).
var argoStatuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true,
}

// argoVerdict runs a health script as Argo CD's util/lua does (ExecuteHealthLua): no standard
// libraries but package, base and table (Argo CD adds a reduced os with time and date only,
// which the script does not use: without it here, a script that starts to would fail this
// test first); `obj` is the object; one second to finish; the returned table is read through
// JSON; a status outside Argo CD's set reads as Unknown.
func argoVerdict(scripts map[schema.GroupKind]string, gk schema.GroupKind, u *unstructured.Unstructured) verdict {
	script, found := scripts[gk]
	if !found {
		// Argo CD gives a resource without a health check no health at all.
		return verdict{Status: "None", Message: "no health check for " + gk.String()}
	}
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return verdict{Status: "Error", Message: err.Error()}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, u.Object))
	if err := l.DoString(script); err != nil {
		return verdict{Status: "Error", Message: err.Error()}
	}
	returned := l.Get(-1)
	switch returned.Type() {
	case lua.LTTable:
		encoded, err := luajson.Encode(returned)
		if err != nil {
			return verdict{Status: "Error", Message: err.Error()}
		}
		var health verdict
		if err := json.Unmarshal(encoded, &health); err != nil {
			return verdict{Status: "Error", Message: err.Error()}
		}
		if !argoStatuses[health.Status] {
			return verdict{Status: "Unknown", Message: "Lua returned an invalid health status"}
		}
		return health
	case lua.LTNil:
		return verdict{}
	default:
		return verdict{Status: "Error", Message: "the script returned a " + returned.Type().String() + ", not a table"}
	}
}

// decodeValue turns a decoded JSON value into a Lua value, as Argo CD's util/lua does.
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case []any:
		table := l.CreateTable(len(v), 0)
		for _, item := range v {
			table.Append(decodeValue(l, item))
		}
		return table
	case map[string]any:
		table := l.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return table
	case nil:
		return lua.LNil
	}
	fail(fmt.Sprintf("cannot decode a %T", value))
	return lua.LNil
}
