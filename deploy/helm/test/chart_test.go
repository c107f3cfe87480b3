package charttest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

const chart = "../kailash"

func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := os.Getenv("HELM")
	if bin == "" {
		// make chart-test (part of make test) builds the pinned helm into
		// bin/ and sets HELM; without it the chart cannot be rendered,
		// which fails rather than passes unseen.
		t.Fatal("HELM is not set: run make chart-test (it builds the pinned helm into bin/ and sets it)")
	}
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), fmt.Errorf("helm %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// objects is a rendered chart, every object decoded strictly (an unknown or
// misspelt field is an error) into its Kubernetes API type.
type objects struct {
	deployments  map[string]*appsv1.Deployment
	services     map[string]*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	pdbs         map[string]*policyv1.PodDisruptionBudget
	hpas         map[string]*autoscalingv2.HorizontalPodAutoscaler
	serviceAccts map[string]*corev1.ServiceAccount
	count        int
}

func decode(t *testing.T, rendered string) *objects {
	t.Helper()
	o := &objects{deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		configMaps: map[string]*corev1.ConfigMap{}, pdbs: map[string]*policyv1.PodDisruptionBudget{},
		hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{}, serviceAccts: map[string]*corev1.ServiceAccount{}}
	for _, doc := range strings.Split(rendered, "\n---") {
		body := strings.TrimSpace(stripComments(doc))
		if body == "" {
			continue
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(body), &meta); err != nil {
			t.Fatalf("not YAML: %v\n%s", err, body)
		}
		strict := func(v any) {
			if err := yaml.UnmarshalStrict([]byte(body), v); err != nil {
				t.Fatalf("%s %s: strict decode: %v\n%s", meta.Kind, meta.Metadata.Name, err, body)
			}
		}
		key := meta.Metadata.Name
		switch meta.APIVersion + " " + meta.Kind {
		case "apps/v1 Deployment":
			v := &appsv1.Deployment{}
			strict(v)
			o.deployments[key] = v
		case "v1 Service":
			v := &corev1.Service{}
			strict(v)
			o.services[key] = v
		case "v1 ConfigMap":
			v := &corev1.ConfigMap{}
			strict(v)
			o.configMaps[key] = v
		case "policy/v1 PodDisruptionBudget":
			v := &policyv1.PodDisruptionBudget{}
			strict(v)
			o.pdbs[key] = v
		case "autoscaling/v2 HorizontalPodAutoscaler":
			v := &autoscalingv2.HorizontalPodAutoscaler{}
			strict(v)
			o.hpas[key] = v
		case "v1 ServiceAccount":
			v := &corev1.ServiceAccount{}
			strict(v)
			o.serviceAccts[key] = v
		default:
			t.Fatalf("object of an unexpected kind %s %s (%s): add it to the test", meta.APIVersion, meta.Kind, key)
		}
		if key == "" {
			t.Fatalf("%s without a name", meta.Kind)
		}
		o.count++
	}
	return o
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if strings.HasPrefix(l, "# Source:") {
			continue
		}
		b.WriteString(l + "\n")
	}
	return b.String()
}

func TestLint(t *testing.T) {
	for _, args := range [][]string{{"lint", "--strict", chart}, {"lint", "--strict", chart, "-f", "values-all.yaml"}} {
		if out, err := helm(t, args...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
}

var components = []string{"envoy", "xds", "authz", "ratelimit", "runner"}

func TestRenderDefault(t *testing.T) {
	out, err := helm(t, "template", "gw", chart, "--namespace", "edge")
	if err != nil {
		t.Fatal(err)
	}
	o := decode(t, out)
	checkInvariants(t, o)
	// Defaults: HPAs for envoy and authz; ratelimit and runner stay at one
	// replica (memory counters, SQLite) until Redis / PostgreSQL are given.
	wantHPA(t, o, "gw-kailash-envoy", "gw-kailash-authz")
	if d := o.deployments["gw-kailash-runner"]; d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		t.Errorf("runner replicas %v, want 1 without PostgreSQL", d.Spec.Replicas)
	}
	cfg := o.configMaps["gw-kailash-config"].Data
	if !strings.Contains(cfg["runner.yaml"], "data_dir: /var/lib/kailash") {
		t.Errorf("runner without PostgreSQL has no data_dir on its volume:\n%s", cfg["runner.yaml"])
	}
}

func TestRenderAll(t *testing.T) {
	out, err := helm(t, "template", "gw", chart, "--namespace", "edge", "-f", "values-all.yaml")
	if err != nil {
		t.Fatal(err)
	}
	o := decode(t, out)
	checkInvariants(t, o)
	wantHPA(t, o, "gw-kailash-envoy", "gw-kailash-authz", "gw-kailash-ratelimit", "gw-kailash-runner")
	for name, d := range o.deployments {
		if d.Spec.Replicas != nil && o.hpas[name] != nil {
			t.Errorf("%s: replicas set while an HPA scales it (the two would fight)", name)
		}
		c := d.Spec.Template.Spec.Containers[0]
		if c.Image != "registry.example/kailash:1.2.3" {
			t.Errorf("%s: image %q", name, c.Image)
		}
		if !hasEnvFromSecret(c, "KAILASH_REDIS_PASSWORD", "kailash-redis") {
			t.Errorf("%s: no KAILASH_REDIS_PASSWORD from the Secret kailash-redis", name)
		}
		if !hasEnvFromSecret(c, "KAILASH_TOTP_KEY", "kailash-totp") {
			t.Errorf("%s: no secretEnv KAILASH_TOTP_KEY", name)
		}
		if strings.HasSuffix(name, "-runner") != hasEnvFromSecret(c, "PGPASSWORD", "kailash-postgres") {
			t.Errorf("%s: PGPASSWORD from kailash-postgres must be exactly the runner's", name)
		}
	}
	cfg := o.configMaps["gw-kailash-config"].Data
	rc := cfg["runner.yaml"]
	var runner struct {
		Runner map[string]any `json:"runner"`
	}
	if err := yaml.Unmarshal([]byte(rc), &runner); err != nil {
		t.Fatal(err)
	}
	if dsn := runner.Runner["postgres_dsn"]; dsn != "host=postgres.data.svc.cluster.local port=5432 dbname=kailash user=kailash sslmode=require" {
		t.Errorf("runner's DSN %q (the password comes from PGPASSWORD, never the file)", dsn)
	}
	if _, ok := runner.Runner["data_dir"]; ok {
		t.Errorf("runner with PostgreSQL still has a data_dir:\n%s", rc)
	}
	if runner.Runner["workflows"] != "/etc/kailash/workflows" {
		t.Errorf("runner.workflows %v, want the mounted ConfigMap /etc/kailash/workflows", runner.Runner["workflows"])
	}
	for _, c := range components {
		if !strings.Contains(cfg[c+".yaml"], "password_env: KAILASH_REDIS_PASSWORD") {
			t.Errorf("%s.yaml: Redis password not by environment variable:\n%s", c, cfg[c+".yaml"])
		}
	}
	validateConfigs(t, cfg)
}

// Each process's kailash.yaml is one kailash itself accepts (kailash
// validate), and each listens on 0.0.0.0 at its own addresses only.
func validateConfigs(t *testing.T, cfg map[string]string) {
	t.Helper()
	kailash := kailashBin(t)
	own := map[string][]string{
		"envoy": nil, "xds": {"xds.grpc", "xds.http"}, "authz": {"authz.grpc", "authz.http"},
		"ratelimit": {"ratelimit.grpc", "ratelimit.http"}, "runner": {"runner.http"},
	}
	for _, c := range components {
		text, ok := cfg[c+".yaml"]
		if !ok {
			t.Fatalf("ConfigMap has no %s.yaml", c)
		}
		var m map[string]any
		if err := yaml.Unmarshal([]byte(text), &m); err != nil {
			t.Fatalf("%s.yaml: %v", c, err)
		}
		for _, sec := range []string{"xds", "authz", "ratelimit", "runner"} {
			for _, f := range []string{"grpc", "http"} {
				secm, _ := m[sec].(map[string]any)
				v, ok := secm[f].(string)
				if !ok {
					continue
				}
				isOwn := false
				for _, o := range own[c] {
					isOwn = isOwn || o == sec+"."+f
				}
				if isOwn != strings.HasPrefix(v, "0.0.0.0:") {
					t.Errorf("%s.yaml: %s.%s = %q (own addresses listen on 0.0.0.0, others are Service names)", c, sec, f, v)
				}
				if !isOwn && !strings.HasPrefix(v, "gw-kailash-"+sec+".edge.svc.cluster.local:") {
					t.Errorf("%s.yaml: %s.%s = %q, want the Service gw-kailash-%s.edge.svc.cluster.local", c, sec, f, v, sec)
				}
			}
		}
		// the workflows ConfigMap's mount point, here the example workflows
		wf, err := filepath.Abs("../../../examples/workflows")
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), c+".yaml")
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(text, "/etc/kailash/workflows", wf)), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(kailash, "validate", "-c", p).CombinedOutput(); err != nil {
			t.Errorf("kailash validate %s.yaml: %v\n%s\n%s", c, err, out, text)
		}
	}
}

// Topologies that would lose executions, split a quota or inline a
// password are refused at render time, naming the value.
func TestRenderRefuses(t *testing.T) {
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"runner.replicas=2"}, "needs postgres.host"},
		{[]string{"runner.autoscaling.enabled=true"}, "needs postgres.host"},
		{[]string{"ratelimit.replicas=3"}, "needs redis.addr"},
		{[]string{"postgres.host=pg"}, "postgres.existingSecret: required"},
	} {
		out, err := helm(t, append([]string{"template", "gw", chart}, setArgs(tc.set)...)...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("--set %v: err %v, want a failure naming %q\n%s", tc.set, err, tc.want, out)
		}
	}
}

func setArgs(s []string) []string {
	var a []string
	for _, v := range s {
		a = append(a, "--set", v)
	}
	return a
}

func wantHPA(t *testing.T, o *objects, names ...string) {
	t.Helper()
	if len(o.hpas) != len(names) {
		t.Errorf("%d HPAs, want %d (%v)", len(o.hpas), len(names), names)
	}
	for _, n := range names {
		if o.hpas[n] == nil {
			t.Errorf("no HPA %s", n)
		}
	}
}

func hasEnvFromSecret(c corev1.Container, name, secret string) bool {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == secret {
			return true
		}
	}
	return false
}

func checkInvariants(t *testing.T, o *objects) {
	t.Helper()
	if len(o.deployments) != len(components) {
		t.Errorf("%d Deployments, want %d (%v)", len(o.deployments), len(components), components)
	}
	for _, c := range components {
		name := "gw-kailash-" + c
		d := o.deployments[name]
		if d == nil {
			t.Errorf("no Deployment %s", name)
			continue
		}
		ps := d.Spec.Template.Spec
		sel, err := metaSelector(d.Spec.Selector.MatchLabels)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("%s: selector %v does not match its pod labels %v", name, d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
		}
		if ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot ||
			ps.SecurityContext.RunAsUser == nil || *ps.SecurityContext.RunAsUser == 0 {
			t.Errorf("%s: pod not run as non-root: %+v", name, ps.SecurityContext)
		}
		if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
			t.Errorf("%s: service account token mounted (nothing uses the API)", name)
		}
		if len(ps.Containers) != 1 {
			t.Fatalf("%s: %d containers", name, len(ps.Containers))
		}
		ct := ps.Containers[0]
		if len(ct.Args) < 3 || ct.Args[0] != c || ct.Args[1] != "-c" || ct.Args[2] != "/etc/kailash/config/"+c+".yaml" {
			t.Errorf("%s: args %v, want [%s -c /etc/kailash/config/%s.yaml ...]", name, ct.Args, c, c)
		}
		if ct.ReadinessProbe == nil || ct.ReadinessProbe.HTTPGet == nil || ct.ReadinessProbe.HTTPGet.Path != "/readyz" {
			t.Errorf("%s: readiness is not /readyz: %+v", name, ct.ReadinessProbe)
		}
		if ct.LivenessProbe == nil || (ct.LivenessProbe.GRPC == nil && (ct.LivenessProbe.HTTPGet == nil || ct.LivenessProbe.HTTPGet.Path != "/healthz")) {
			t.Errorf("%s: liveness is neither gRPC health nor /healthz: %+v", name, ct.LivenessProbe)
		}
		if c == "xds" || c == "authz" || c == "ratelimit" {
			if ct.LivenessProbe == nil || ct.LivenessProbe.GRPC == nil || !hasPort(ct, ct.LivenessProbe.GRPC.Port) {
				t.Errorf("%s: liveness is not gRPC health on its gRPC port", name)
			}
		}
		for _, p := range []*corev1.Probe{ct.ReadinessProbe, ct.LivenessProbe, ct.StartupProbe} {
			if p != nil && p.HTTPGet != nil && !hasNamedPort(ct, p.HTTPGet.Port.String()) {
				t.Errorf("%s: probe on port %q the container does not declare", name, p.HTTPGet.Port.String())
			}
		}
		if ct.Resources.Requests.Cpu().IsZero() || ct.Resources.Requests.Memory().IsZero() || ct.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s: resources requests/limits missing: %+v", name, ct.Resources)
		}
		sc := ct.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0 {
			t.Errorf("%s: container securityContext not read-only/no-escalation/drop ALL: %+v", name, sc)
		}
		mounts := map[string]string{}
		for _, m := range ct.VolumeMounts {
			mounts[m.MountPath] = m.Name
		}
		if mounts["/tmp"] == "" || mounts["/etc/kailash/config"] == "" {
			t.Errorf("%s: no writable /tmp or no config mount: %v", name, mounts)
		}
		vols := map[string]corev1.Volume{}
		for _, v := range ps.Volumes {
			vols[v.Name] = v
		}
		for _, m := range ct.VolumeMounts {
			if _, ok := vols[m.Name]; !ok {
				t.Errorf("%s: mount of an undeclared volume %s", name, m.Name)
			}
		}
		if cm := vols["config"].ConfigMap; cm == nil || o.configMaps[cm.Name] == nil {
			t.Errorf("%s: config volume names no rendered ConfigMap", name)
		}
		// Secrets only by reference: env from secretKeyRef, volumes by secretName.
		for _, e := range ct.Env {
			if e.ValueFrom == nil && e.Value != "" && strings.Contains(strings.ToLower(e.Name), "pass") {
				t.Errorf("%s: %s inlined", name, e.Name)
			}
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && (e.ValueFrom.SecretKeyRef.Name == "" || e.ValueFrom.SecretKeyRef.Key == "") {
				t.Errorf("%s: %s: Secret reference without name or key", name, e.Name)
			}
		}
		for _, v := range ps.Volumes {
			if v.Secret != nil && v.Secret.SecretName == "" {
				t.Errorf("%s: secret volume %s without secretName", name, v.Name)
			}
		}
		if sa := ps.ServiceAccountName; o.serviceAccts[sa] == nil {
			t.Errorf("%s: service account %q not rendered", name, sa)
		}
		// Its Service selects exactly its pods, on ports the pods declare.
		svc := o.services[name]
		if svc == nil {
			t.Errorf("no Service %s", name)
		} else {
			if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) || len(svc.Spec.Selector) == 0 {
				t.Errorf("Service %s selector %v does not match the pods %v", name, svc.Spec.Selector, d.Spec.Template.Labels)
			}
			for other, od := range o.deployments {
				if other != name && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(od.Spec.Template.Labels)) {
					t.Errorf("Service %s also selects %s's pods", name, other)
				}
			}
			for _, p := range svc.Spec.Ports {
				if !hasNamedPort(ct, p.TargetPort.String()) {
					t.Errorf("Service %s port %s targets %q, not a container port", name, p.Name, p.TargetPort.String())
				}
			}
		}
		if pdb := o.pdbs[name]; pdb == nil {
			t.Errorf("no PodDisruptionBudget %s", name)
		} else if !labels.SelectorFromSet(pdb.Spec.Selector.MatchLabels).Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("PDB %s does not select its pods", name)
		}
	}
	for name, h := range o.hpas {
		ref := h.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || o.deployments[ref.Name] == nil {
			t.Errorf("HPA %s targets %s %s %s, not a rendered Deployment", name, ref.APIVersion, ref.Kind, ref.Name)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || h.Spec.MaxReplicas < *h.Spec.MinReplicas || len(h.Spec.Metrics) == 0 {
			t.Errorf("HPA %s: min %v max %d metrics %d", name, h.Spec.MinReplicas, h.Spec.MaxReplicas, len(h.Spec.Metrics))
		}
		if strings.HasSuffix(name, "-xds") {
			t.Errorf("HPA on xds (not one of envoy, authz, ratelimit, runner)")
		}
	}
}

func metaSelector(m map[string]string) (labels.Selector, error) {
	if len(m) == 0 {
		return nil, fmt.Errorf("empty selector")
	}
	return labels.SelectorFromSet(m), nil
}

func hasNamedPort(c corev1.Container, name string) bool {
	for _, p := range c.Ports {
		if p.Name == name || fmt.Sprint(p.ContainerPort) == name {
			return true
		}
	}
	return false
}

func hasPort(c corev1.Container, port int32) bool {
	for _, p := range c.Ports {
		if p.ContainerPort == port {
			return true
		}
	}
	return false
}

var builtKailash string

// kailashBin is $KAILASH, else kailash built from this repository once.
func kailashBin(t *testing.T) string {
	t.Helper()
	if k := os.Getenv("KAILASH"); k != "" {
		return k
	}
	if builtKailash == "" {
		dir, err := os.MkdirTemp("", "charttest-")
		if err != nil {
			t.Fatal(err)
		}
		k := filepath.Join(dir, "kailash")
		if out, err := exec.Command("go", "build", "-C", "../../..", "-o", k, "./cmd/kailash").CombinedOutput(); err != nil {
			t.Fatalf("build kailash: %v\n%s", err, out)
		}
		builtKailash = k
	}
	return builtKailash
}
