// Package deploy holds the container images, the Docker Compose cluster and the Kubernetes
// manifests. Its tests check those files statically (no Docker, no cluster, no cgo): every YAML
// parses, the Kubernetes objects are well formed and consistent with each other, the raft group
// named by --peers is the one the Services and volumes give, secrets never sit in a command
// line, and every loraft command and flag the files use exists in the CLI. TestGPUCheckBudget
// runs gpu-check.sh on stubs of bin/loraft and python.
package deploy

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// ---------------------------------------------------------------- loading

// yamlDoc is one document of a YAML file under compose/ or k8s/.
type yamlDoc struct {
	file string // relative to deploy/
	v    map[string]any
}

func (d yamlDoc) String() string {
	return fmt.Sprintf("%s (%s %s)", d.file, str(d.v["kind"]), str(dig(d.v, "metadata", "name")))
}

func yamlFiles(t *testing.T, dirs ...string) []string {
	t.Helper()
	var out []string
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !e.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
				out = append(out, p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		t.Fatalf("no YAML files under %v", dirs)
	}
	return out
}

func loadYAML(t *testing.T, file string) []yamlDoc {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var docs []yamlDoc
	for {
		var v map[string]any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if v != nil {
			docs = append(docs, yamlDoc{file: filepath.ToSlash(file), v: v})
		}
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no YAML document", file)
	}
	return docs
}

// k8sObjects are the documents of the manifests directly in one kustomization directory
// (not the kustomization itself).
func k8sObjects(t *testing.T, dir string) []yamlDoc {
	t.Helper()
	var out []yamlDoc
	for _, f := range yamlFiles(t, dir) {
		if filepath.Dir(f) != filepath.Clean(dir) || filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		out = append(out, loadYAML(t, f)...)
	}
	return out
}

func findObject(t *testing.T, docs []yamlDoc, kind, name string) map[string]any {
	t.Helper()
	for _, d := range docs {
		if d.v["kind"] == kind && dig(d.v, "metadata", "name") == name {
			return d.v
		}
	}
	t.Fatalf("no %s %q among %v", kind, name, docs)
	return nil
}

// ---------------------------------------------------------------- generic access

func dig(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	default:
		return fmt.Sprint(x)
	}
}

func list(v any) []any { l, _ := v.([]any); return l }

func strList(t *testing.T, what string, v any) []string {
	t.Helper()
	var out []string
	for _, x := range list(v) {
		s, ok := x.(string)
		if !ok {
			t.Fatalf("%s: %v (%T) is not a string", what, x, x)
		}
		out = append(out, s)
	}
	return out
}

func mapping(v any) map[string]any { m, _ := v.(map[string]any); return m }

// containers lists a workload's pod-template containers.
func containers(obj map[string]any) []map[string]any {
	var out []map[string]any
	for _, c := range list(dig(obj, "spec", "template", "spec", "containers")) {
		out = append(out, mapping(c))
	}
	return out
}

func container(t *testing.T, obj map[string]any, name string) map[string]any {
	t.Helper()
	for _, c := range containers(obj) {
		if c["name"] == name {
			return c
		}
	}
	t.Fatalf("%s %s has no container %q", obj["kind"], dig(obj, "metadata", "name"), name)
	return nil
}

// envOf maps a container's env names to their entries.
func envOf(c map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, e := range list(c["env"]) {
		m := mapping(e)
		out[str(m["name"])] = m
	}
	return out
}

func containerPort(t *testing.T, c map[string]any, name string) int {
	t.Helper()
	for _, p := range list(c["ports"]) {
		if m := mapping(p); m["name"] == name {
			return m["containerPort"].(int)
		}
	}
	t.Fatalf("container %s has no port %q", c["name"], name)
	return 0
}

func servicePort(t *testing.T, svc map[string]any, name string) int {
	t.Helper()
	for _, p := range list(dig(svc, "spec", "ports")) {
		if m := mapping(p); m["name"] == name {
			return m["port"].(int)
		}
	}
	t.Fatalf("Service %s has no port %q", dig(svc, "metadata", "name"), name)
	return 0
}

// selects reports whether every label of selector is on labels.
func selects(selector, labels map[string]any) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------- shell words

// shellWords splits a command line like sh does for quoting (no expansion): quotes are
// removed, $VARS are kept as written.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	in, quote := false, rune(0)
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote == '\'':
			if r == '\'' {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case quote == '"':
			switch {
			case r == '"':
				quote = 0
			case r == '\\' && i+1 < len(rs) && strings.ContainsRune("\"\\$`", rs[i+1]):
				i++
				cur.WriteRune(rs[i])
			default:
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == '\\' && i+1 < len(rs):
			i++
			if rs[i] != '\n' {
				cur.WriteRune(rs[i])
				in = true
			}
		case r == ' ' || r == '\t' || r == '\n':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote in %q", quote, s)
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}

// loraftInScript returns the arguments of each `loraft …` command in a shell script
// (a command word loraft, alone or after exec).
func loraftInScript(t *testing.T, script string) [][]string {
	t.Helper()
	var out [][]string
	for _, line := range strings.Split(strings.ReplaceAll(script, "\\\n", " "), "\n") {
		words, err := shellWords(line)
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range words {
			if w == "loraft" && (i == 0 || words[i-1] == "exec" || words[i-1] == "--") {
				out = append(out, words[i+1:])
				break
			}
		}
	}
	return out
}

// flagValue returns the value of --name in args (either "--name v" or "--name=v").
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func mustFlag(t *testing.T, what string, args []string, name string) string {
	t.Helper()
	v, ok := flagValue(args, name)
	if !ok {
		t.Fatalf("%s: no --%s in %q", what, name, args)
	}
	return v
}

// ---------------------------------------------------------------- raft peers

type peer struct{ id, raft, api string }

// parsePeers parses --peers as the CLI does: ID=RAFT_HOST:PORT/API_HOST:PORT,...
func parsePeers(t *testing.T, s string) []peer {
	t.Helper()
	var out []peer
	for _, p := range strings.Split(s, ",") {
		id, addrs, ok := strings.Cut(strings.TrimSpace(p), "=")
		raft, api, ok2 := strings.Cut(addrs, "/")
		if !ok || !ok2 || id == "" || raft == "" || api == "" {
			t.Fatalf("peer %q: want ID=RAFT_HOST:PORT/API_HOST:PORT", p)
		}
		out = append(out, peer{id, raft, api})
	}
	return out
}

func hostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		t.Fatalf("address %q has no port", addr)
	}
	port, err := strconv.Atoi(addr[i+1:])
	if err != nil || port <= 0 || port > 65535 {
		t.Fatalf("address %q: bad port", addr)
	}
	return addr[:i], port
}

// ---------------------------------------------------------------- the CLI

// cliFlags are the loraft commands the deployment files may use, with their flags (true: the
// flag takes a value). TestCLITableMatchesSource ties every name here to cmd/loraft, which
// cannot be built here (it needs libtorch).
var (
	tlsFlags    = map[string]bool{"tls-ca": true, "tls-cert": true, "tls-key": true}
	storeFlags  = map[string]bool{"store": true, "s3-endpoint": true, "s3-tls": false, "s3-region": true, "s3-credentials-file": true}
	clientFlags = map[string]bool{"coordinators": true}
	globalFlags = map[string]bool{"log-level": true, "help": false, "h": false, "version": false}
	cliFlags    = map[string]map[string]bool{
		"coordinator": merge(tlsFlags, map[string]bool{"id": true, "raft-addr": true, "api-addr": true, "dir": true,
			"peers": true, "raft-profile": true, "lease": true, "insecure": false}),
		"trainer": merge(tlsFlags, storeFlags, clientFlags, map[string]bool{"id": true, "listen": true, "events": true,
			"device": true, "compute-dtype": true, "cache-dir": true, "no-cache": false, "step-timeout": true,
			"keep-latest": true, "keep-best": true, "insecure": false}),
		"sweep launch": merge(tlsFlags, storeFlags, clientFlags, map[string]bool{"spec": true, "data": true,
			"drop-bad": false, "wait": false}),
		"sweep status": merge(tlsFlags, clientFlags, map[string]bool{"json": false, "watch": false}),
		"sweep ls":     merge(tlsFlags, clientFlags, map[string]bool{"json": false}),
		"sweep report": merge(tlsFlags, storeFlags, clientFlags, map[string]bool{"out": true}),
		"sweep cancel": merge(tlsFlags, clientFlags),
		"run ls":       merge(tlsFlags, clientFlags, map[string]bool{"sweep": true, "json": false}),
		"run resume":   merge(tlsFlags, clientFlags),
		"adapter pull": merge(tlsFlags, storeFlags, clientFlags, map[string]bool{"best": false, "run": true,
			"sweep": true, "metric": true, "out": true}),
		"version": {"json": false, "stubbed": false},
		"certs init": {"out": true, "coordinator-ids": true, "coordinator-hosts": true, "trainer-ids": true,
			"trainer-hosts": true, "operator-ids": true, "viewer-ids": true},
		"certs issue": {"ca": true, "role": true, "id": true, "hosts": true, "out": true},
		"predict":     {"adapter": true, "text": true, "input": true, "weights": true, "device": true, "json": false},
		"plot":        {"report": true, "out": true, "format": true},
	}
	// cliEnv are the environment variables the loraft CLI reads that the files may set.
	cliEnv = []string{"LORAFT_COORDINATORS", "LORAFT_STORE", "LORAFT_S3_ENDPOINT", "LORAFT_S3_TLS",
		"LORAFT_S3_REGION", "LORAFT_S3_CREDENTIALS_FILE", "LORAFT_CACHE", "LORAFT_LOG_LEVEL",
		"LORAFT_TLS_CA", "LORAFT_TLS_CERT", "LORAFT_TLS_KEY"}
)

func merge(ms ...map[string]bool) map[string]bool {
	out := map[string]bool{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// checkInvocation checks one loraft argument list (without the program name) against cliFlags:
// a known command, known flags, values where flags take them, and no flag after a positional
// argument (the CLI rejects those).
func checkInvocation(args []string) error {
	i := 0
	for i < len(args) && strings.HasPrefix(args[i], "-") {
		name, _, hasValue := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		takes, ok := globalFlags[name]
		if !ok {
			return fmt.Errorf("unknown global flag %s", args[i])
		}
		if name == "help" || name == "h" || name == "version" {
			return nil
		}
		i++
		if takes && !hasValue {
			i++
		}
	}
	if i >= len(args) {
		return errors.New("no command")
	}
	cmd := args[i]
	i++
	if _, ok := cliFlags[cmd]; !ok && i < len(args) {
		cmd += " " + args[i]
		i++
	}
	flags, ok := cliFlags[cmd]
	if !ok {
		return fmt.Errorf("unknown command %q", cmd)
	}
	positional := false
	for ; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			positional = true
			continue
		}
		if positional {
			return fmt.Errorf("%s: flag %s after a positional argument", cmd, a)
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name == "help" || name == "h" {
			continue
		}
		takes, ok := flags[name]
		if !ok {
			return fmt.Errorf("%s: unknown flag %s", cmd, a)
		}
		if takes && !hasValue {
			if i+1 >= len(args) || strings.HasPrefix(args[i+1], "--") {
				return fmt.Errorf("%s: flag %s has no value", cmd, a)
			}
			i++
		}
	}
	return nil
}

func TestCheckInvocation(t *testing.T) {
	for _, tc := range []struct {
		args string
		ok   bool
	}{
		{"coordinator --id n1 --raft-addr n1:7300 --api-addr 0.0.0.0:7400 --dir /d --peers a=b/c --raft-profile fast --lease 3s", true},
		{"--log-level debug trainer --listen 10.0.0.1:7500", true},
		{"sweep status --watch demo", true},
		{"sweep status demo --watch", false}, // flags go before the sweep's name
		{"sweep launch --spec s.yaml --data d.csv --s3-secret x", false},
		{"coordinator --peers", false},
		{"trainer --s3-tls --listen x:1", true},
		{"sweep frobnicate", false},
		{"--help", true},
		{"", false},
	} {
		args, err := shellWords(tc.args)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkInvocation(args); (err == nil) != tc.ok {
			t.Errorf("checkInvocation(%q) = %v, want ok=%v", tc.args, err, tc.ok)
		}
	}
}

// cliSource is the non-test Go source of cmd/loraft.
func cliSource(t *testing.T) string {
	t.Helper()
	files, err := filepath.Glob("../cmd/loraft/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("cmd/loraft sources: %v", err)
	}
	var b strings.Builder
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	return b.String()
}

func TestCLITableMatchesSource(t *testing.T) {
	src := cliSource(t)
	declared := func(name string) bool {
		return regexp.MustCompile(`Name:\s*"` + regexp.QuoteMeta(name) + `"`).MatchString(src)
	}
	for cmd, flags := range cliFlags {
		for _, word := range strings.Fields(cmd) {
			if !declared(word) {
				t.Errorf("command %q: cmd/loraft declares no Name: %q", cmd, word)
			}
		}
		for f := range flags {
			if f != "help" && !declared(f) {
				t.Errorf("command %q: cmd/loraft declares no flag --%s", cmd, f)
			}
		}
	}
	for f := range globalFlags {
		if f != "help" && f != "h" && f != "version" && !declared(f) {
			t.Errorf("cmd/loraft declares no global flag --%s", f)
		}
	}
	for _, env := range cliEnv {
		if !strings.Contains(src, `"`+env+`"`) {
			t.Errorf("cmd/loraft never reads %s", env)
		}
	}
}

// ---------------------------------------------------------------- YAML in general

func TestYAMLParses(t *testing.T) {
	for _, f := range yamlFiles(t, "compose", "k8s") {
		t.Run(f, func(t *testing.T) {
			for _, d := range loadYAML(t, f) {
				if len(d.v) == 0 {
					t.Errorf("%s: empty document", f)
				}
			}
		})
	}
}

var dns1123 = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func TestK8sObjectsWellFormed(t *testing.T) {
	seen := map[string]string{}
	for _, f := range yamlFiles(t, "k8s") {
		for i, d := range loadYAML(t, f) {
			t.Run(fmt.Sprintf("%s#%d", f, i), func(t *testing.T) {
				api, kind := str(d.v["apiVersion"]), str(d.v["kind"])
				if api == "" || kind == "" {
					t.Fatalf("missing apiVersion (%q) or kind (%q)", api, kind)
				}
				if kind == "Kustomization" {
					if api != "kustomize.config.k8s.io/v1beta1" {
						t.Errorf("Kustomization apiVersion %q", api)
					}
					return
				}
				name := str(dig(d.v, "metadata", "name"))
				if !dns1123.MatchString(name) || len(name) > 63 {
					t.Errorf("metadata.name %q is not a DNS-1123 label", name)
				}
				if ns := str(dig(d.v, "metadata", "namespace")); ns != "" && ns != "loraft" {
					t.Errorf("namespace %q, want loraft (or none: kustomize sets it)", ns)
				}
				if strings.Contains(f, "/base/") {
					key := kind + "/" + name
					if prev, dup := seen[key]; dup {
						t.Errorf("%s defined in %s and %s", key, prev, f)
					}
					seen[key] = f
				}
				// A workload's selector must select its own pods.
				switch kind {
				case "StatefulSet", "Deployment":
					sel := mapping(dig(d.v, "spec", "selector", "matchLabels"))
					labels := mapping(dig(d.v, "spec", "template", "metadata", "labels"))
					if !strings.Contains(f, "/gpu/") && !selects(sel, labels) {
						t.Errorf("selector %v does not select the pod labels %v", sel, labels)
					}
				}
			})
		}
	}
}

func TestKustomizations(t *testing.T) {
	for _, dir := range []string{"k8s/base", "k8s/gpu"} {
		t.Run(dir, func(t *testing.T) {
			k := loadYAML(t, filepath.Join(dir, "kustomization.yaml"))[0].v
			if k["kind"] != "Kustomization" {
				t.Fatalf("kind %v", k["kind"])
			}
			listed := map[string]bool{}
			for _, r := range strList(t, "resources", k["resources"]) {
				p := filepath.Join(dir, r)
				if _, err := os.Stat(p); err != nil {
					t.Errorf("resource %s: %v", r, err)
				}
				listed[filepath.Clean(p)] = true
			}
			var patches []string
			for _, p := range list(k["patches"]) {
				path := str(mapping(p)["path"])
				if _, err := os.Stat(filepath.Join(dir, path)); err != nil {
					t.Errorf("patch %s: %v", path, err)
				}
				patches = append(patches, filepath.Clean(filepath.Join(dir, path)))
			}
			// Every manifest of the directory is listed, except the Secret example and patches.
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				p := filepath.Clean(filepath.Join(dir, e.Name()))
				if e.IsDir() || !strings.HasSuffix(e.Name(), ".yaml") || e.Name() == "kustomization.yaml" ||
					strings.HasSuffix(e.Name(), ".example.yaml") || slices.Contains(patches, p) {
					continue
				}
				if !listed[p] {
					t.Errorf("%s is not in %s/kustomization.yaml's resources", e.Name(), dir)
				}
			}
			// Every patch targets an object of the base.
			base := k8sObjects(t, "k8s/base")
			for _, p := range patches {
				for _, d := range loadYAML(t, p) {
					findObject(t, base, str(d.v["kind"]), str(dig(d.v, "metadata", "name")))
				}
			}
			for _, img := range list(k["images"]) {
				if str(mapping(img)["name"]) != "loraft" {
					t.Errorf("images: %v renames an image the manifests do not use", img)
				}
			}
		})
	}
}

// ---------------------------------------------------------------- Kubernetes: the raft group

const (
	coordinatorSTS = "loraft-coordinator"
	trainerSTS     = "loraft-trainer"
)

// coordinatorArgs returns the coordinator container's loraft arguments with the shell variables
// of its pod ordinal expanded, and the script that runs them.
func coordinatorArgs(t *testing.T, c map[string]any, env map[string]string) ([]string, string) {
	t.Helper()
	cmd := strList(t, "command", c["command"])
	args := strList(t, "args", c["args"])
	if len(cmd) == 0 {
		return args, ""
	}
	if len(cmd) < 2 || cmd[0] != "/bin/sh" || len(args) != 1 {
		t.Fatalf("coordinator: want command [/bin/sh -ec] and one script, got %q %q", cmd, args)
	}
	runs := loraftInScript(t, args[0])
	if len(runs) != 1 {
		t.Fatalf("coordinator script runs loraft %d times, want once:\n%s", len(runs), args[0])
	}
	if !strings.Contains(args[0], "exec loraft coordinator") {
		t.Errorf("coordinator script must exec loraft (signals reach it, not the shell)")
	}
	expanded := make([]string, len(runs[0]))
	for i, a := range runs[0] {
		expanded[i] = os.Expand(a, func(k string) string {
			v, ok := env[k]
			if !ok {
				t.Errorf("coordinator script uses $%s, which is not set", k)
			}
			return v
		})
	}
	return expanded, args[0]
}

func TestK8sCoordinatorStatefulSet(t *testing.T) {
	objs := k8sObjects(t, "k8s/base")
	sts := findObject(t, objs, "StatefulSet", coordinatorSTS)
	if r := dig(sts, "spec", "replicas"); r != 3 {
		t.Fatalf("replicas %v, want 3", r)
	}
	if p := dig(sts, "spec", "podManagementPolicy"); p != "Parallel" {
		t.Errorf("podManagementPolicy %v, want Parallel (a fresh group needs a quorum up to elect)", p)
	}
	podLabels := mapping(dig(sts, "spec", "template", "metadata", "labels"))

	// The headless Service gives the members their stable names.
	svcName := str(dig(sts, "spec", "serviceName"))
	svc := findObject(t, objs, "Service", svcName)
	if dig(svc, "spec", "clusterIP") != "None" {
		t.Errorf("Service %s is not headless", svcName)
	}
	if dig(svc, "spec", "publishNotReadyAddresses") != true {
		t.Errorf("Service %s must publish not-ready members: raft needs its peers before readiness", svcName)
	}
	if !selects(mapping(dig(svc, "spec", "selector")), podLabels) {
		t.Errorf("Service %s does not select the coordinator pods", svcName)
	}

	c := container(t, sts, "coordinator")
	raftPort, apiPort := containerPort(t, c, "raft"), containerPort(t, c, "api")
	if p := servicePort(t, svc, "raft"); p != raftPort {
		t.Errorf("headless Service raft port %d, container %d", p, raftPort)
	}

	// The peers: three members named after the pods, at their headless-Service DNS names.
	env := envOf(c)
	for _, name := range []string{"POD_NAME", "POD_IP"} {
		want := map[string]string{"POD_NAME": "metadata.name", "POD_IP": "status.podIP"}[name]
		if got := dig(env[name], "valueFrom", "fieldRef", "fieldPath"); got != want {
			t.Errorf("env %s from %v, want the downward API's %s", name, got, want)
		}
	}
	shellEnv := map[string]string{}
	for k, e := range env {
		if v, ok := e["value"].(string); ok {
			shellEnv[k] = v
		}
	}
	var peersFlag string
	var members []peer
	for ordinal := range 3 {
		pod := fmt.Sprintf("%s-%d", coordinatorSTS, ordinal)
		shellEnv["POD_NAME"], shellEnv["POD_IP"] = pod, "10.0.0.1"
		args, script := coordinatorArgs(t, c, shellEnv)
		if err := checkInvocation(args); err != nil {
			t.Fatalf("%s: %v", pod, err)
		}
		if args[0] != "coordinator" {
			t.Fatalf("%s runs loraft %s", pod, args[0])
		}
		what := pod + "'s coordinator"
		p := mustFlag(t, what, args, "peers")
		if ordinal == 0 {
			peersFlag, members = p, parsePeers(t, p)
		} else if p != peersFlag {
			t.Errorf("%s: --peers differs between members", what)
		}
		id := mustFlag(t, what, args, "id")
		if id != pod {
			t.Errorf("%s: --id %q, want the pod name %q", what, id, pod)
		}
		var self *peer
		for i := range members {
			if members[i].id == id {
				self = &members[i]
			}
		}
		if self == nil {
			t.Fatalf("%s: --peers does not list --id %s", what, id)
		}
		if ra := mustFlag(t, what, args, "raft-addr"); ra != self.raft {
			t.Errorf("%s: --raft-addr %q, but --peers gives it %q", what, ra, self.raft)
		}
		host, _ := hostPort(t, self.raft)
		if !strings.Contains(script, `getent hosts "$POD_NAME.`+svcName+`"`) {
			t.Errorf("the script does not wait for %s to resolve", host)
		}
		if _, port := hostPort(t, mustFlag(t, what, args, "api-addr")); port != apiPort {
			t.Errorf("%s: --api-addr port %d, container api port %d", what, port, apiPort)
		}
		dir := mustFlag(t, what, args, "dir")
		mounted := false
		for _, m := range list(c["volumeMounts"]) {
			m := mapping(m)
			if m["mountPath"] == dir {
				for _, vct := range list(dig(sts, "spec", "volumeClaimTemplates")) {
					mounted = mounted || dig(vct, "metadata", "name") == m["name"]
				}
			}
		}
		if !mounted {
			t.Errorf("%s: --dir %s is not a volumeClaimTemplate's mount: raft state would not survive the pod", what, dir)
		}
	}
	if len(members) != 3 {
		t.Fatalf("--peers names %d members, want 3: %q", len(members), peersFlag)
	}
	var apis []string
	for i, m := range members {
		wantHost := fmt.Sprintf("%s-%d.%s", coordinatorSTS, i, svcName)
		if m.id != fmt.Sprintf("%s-%d", coordinatorSTS, i) {
			t.Errorf("member %d id %q", i, m.id)
		}
		for _, a := range []struct {
			addr string
			port int
		}{{m.raft, raftPort}, {m.api, apiPort}} {
			host, port := hostPort(t, a.addr)
			if host != wantHost && !strings.HasPrefix(host, wantHost+".") {
				t.Errorf("member %s address %s: host is not the pod's DNS name %s", m.id, a.addr, wantHost)
			}
			if port != a.port {
				t.Errorf("member %s address %s: port, want %d", m.id, a.addr, a.port)
			}
		}
		apis = append(apis, m.api)
	}

	// Clients list every member's API (writes find the leader by trying each).
	trainer := container(t, findObject(t, objs, "StatefulSet", trainerSTS), "trainer")
	for who, e := range map[string]map[string]map[string]any{"coordinator": env, "trainer": envOf(trainer)} {
		if got := str(e["LORAFT_COORDINATORS"]["value"]); got != strings.Join(apis, ",") {
			t.Errorf("%s LORAFT_COORDINATORS %q, want the members' API addresses %q", who, got, strings.Join(apis, ","))
		}
	}

	// The API Service and the disruption budget cover the same pods.
	api := findObject(t, objs, "Service", "loraft-coordinator")
	if typ := str(dig(api, "spec", "type")); typ != "" && typ != "ClusterIP" {
		t.Errorf("API Service type %s", typ)
	}
	if !selects(mapping(dig(api, "spec", "selector")), podLabels) || servicePort(t, api, "api") != apiPort {
		t.Errorf("API Service does not route port %d to the coordinators", apiPort)
	}
	pdb := findObject(t, objs, "PodDisruptionBudget", coordinatorSTS)
	if dig(pdb, "spec", "minAvailable") != 2 {
		t.Errorf("PodDisruptionBudget minAvailable %v, want 2 of 3", dig(pdb, "spec", "minAvailable"))
	}
	if !selects(mapping(dig(pdb, "spec", "selector", "matchLabels")), podLabels) {
		t.Errorf("PodDisruptionBudget does not select the coordinator pods")
	}
}

// trainerArgs returns the trainer container's loraft arguments for pod, the script's own
// (with $POD_NAME and $POD_IP expanded) followed by extra, which the script passes on as "$@".
// The trainer runs [/bin/sh -ec SCRIPT NAME] with extra as the container's args.
func trainerArgs(t *testing.T, cmd []string, extra []string, pod string) ([]string, string) {
	t.Helper()
	if len(cmd) != 4 || cmd[0] != "/bin/sh" || cmd[1] != "-ec" {
		t.Fatalf("trainer: want command [/bin/sh -ec SCRIPT NAME], got %q", cmd)
	}
	runs := loraftInScript(t, cmd[2])
	if len(runs) != 1 || !strings.Contains(cmd[2], "exec loraft trainer") {
		t.Fatalf("trainer script must exec loraft trainer once:\n%s", cmd[2])
	}
	var out []string
	for _, a := range runs[0] {
		if a == "$@" {
			out = append(out, extra...)
			continue
		}
		out = append(out, os.Expand(a, func(k string) string {
			switch k {
			case "POD_NAME":
				return pod
			case "POD_IP":
				return "10.0.0.1"
			}
			t.Errorf("trainer script uses $%s, which is not set", k)
			return ""
		}))
	}
	if !slices.Contains(runs[0], "$@") {
		t.Errorf("trainer script does not pass its arguments on (\"$@\"): the GPU overlay's flags would be lost")
	}
	return out, cmd[2]
}

func TestK8sTrainer(t *testing.T) {
	objs := k8sObjects(t, "k8s/base")
	sts := findObject(t, objs, "StatefulSet", trainerSTS)
	c := container(t, sts, "trainer")
	env := envOf(c)
	podLabels := mapping(dig(sts, "spec", "template", "metadata", "labels"))
	// The headless Service gives each trainer the stable DNS name it listens on and its
	// certificate names.
	svcName := str(dig(sts, "spec", "serviceName"))
	svc := findObject(t, objs, "Service", svcName)
	if dig(svc, "spec", "clusterIP") != "None" || dig(svc, "spec", "publishNotReadyAddresses") != true {
		t.Errorf("Service %s must be headless and publish not-ready pods", svcName)
	}
	if !selects(mapping(dig(svc, "spec", "selector")), podLabels) {
		t.Errorf("Service %s does not select the trainer pods", svcName)
	}
	port := containerPort(t, c, "allreduce")
	if servicePort(t, svc, "allreduce") != port {
		t.Errorf("Service %s allreduce port is not the container's %d", svcName, port)
	}
	for _, name := range []string{"POD_NAME", "POD_IP"} {
		want := map[string]string{"POD_NAME": "metadata.name", "POD_IP": "status.podIP"}[name]
		if got := dig(env[name], "valueFrom", "fieldRef", "fieldPath"); got != want {
			t.Errorf("env %s from %v, want the downward API's %s", name, got, want)
		}
	}
	// The GPU overlay's strategic-merge patch sets the args, which the script passes on.
	patch := loadYAML(t, "k8s/gpu/trainer-gpu.yaml")[0].v
	if patch["kind"] != "StatefulSet" {
		t.Fatalf("GPU patch kind %v, want the trainer StatefulSet", patch["kind"])
	}
	pcs := list(dig(patch, "spec", "template", "spec", "containers"))
	if len(pcs) != 1 || mapping(pcs[0])["name"] != "trainer" {
		t.Fatalf("GPU patch containers %v, want the trainer", pcs)
	}
	gpu := mapping(pcs[0])
	if gpu["command"] != nil {
		t.Errorf("GPU patch replaces the trainer's script")
	}
	if q := dig(gpu, "resources", "limits", "nvidia.com/gpu"); q != 1 {
		t.Errorf("GPU trainer limits nvidia.com/gpu %v, want 1 (it uses cuda:0)", q)
	}
	cmd := strList(t, "command", c["command"])
	for _, tc := range []struct {
		name   string
		extra  []string
		device string
	}{
		{"base", strList(t, "args", c["args"]), ""},
		{"gpu", strList(t, "gpu args", gpu["args"]), "cuda:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := trainerSTS + "-1"
			args, script := trainerArgs(t, cmd, tc.extra, pod)
			if err := checkInvocation(args); err != nil {
				t.Fatal(err)
			}
			// --listen is what other ranks dial and what the certificate names: the pod's DNS
			// name under the headless Service, once it resolves to the pod.
			if l := mustFlag(t, "trainer", args, "listen"); l != fmt.Sprintf("%s.%s:%d", pod, svcName, port) {
				t.Errorf("--listen %q, want %s.%s:%d", l, pod, svcName, port)
			}
			if !strings.Contains(script, `getent hosts "$POD_NAME.`+svcName+`"`) {
				t.Errorf("the script does not wait for $POD_NAME.%s to resolve", svcName)
			}
			if id := mustFlag(t, "trainer", args, "id"); id != pod {
				t.Errorf("--id %q, want the pod name %q", id, pod)
			}
			if d, _ := flagValue(args, "device"); d != tc.device {
				t.Errorf("--device %q, want %q", d, tc.device)
			}
		})
	}
	// Store: an s3:// prefix on the MinIO Service of the same install, trusting the loraft CA.
	if s := str(env["LORAFT_STORE"]["value"]); !strings.HasPrefix(s, "s3://") {
		t.Errorf("LORAFT_STORE %q, want s3://bucket/prefix", s)
	}
	host, sport := hostPort(t, str(env["LORAFT_S3_ENDPOINT"]["value"]))
	minio := findObject(t, objs, "Service", host)
	if servicePort(t, minio, "s3") != sport {
		t.Errorf("LORAFT_S3_ENDPOINT port %d is not the %s Service's s3 port", sport, host)
	}
	minioSTS := findObject(t, objs, "StatefulSet", host)
	if !selects(mapping(dig(minio, "spec", "selector")), mapping(dig(minioSTS, "spec", "template", "metadata", "labels"))) {
		t.Errorf("Service %s does not select MinIO's pods", host)
	}
}

// ---------------------------------------------------------------- Compose

func composeServices(t *testing.T, file string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for name, s := range mapping(loadYAML(t, file)[0].v["services"]) {
		out[name] = mapping(s)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no services", file)
	}
	return out
}

// composeVolume is one entry of a service's volumes, short (SRC:DST[:MODE]) or long syntax.
type composeVolume struct {
	source, target, subpath string
	readOnly                bool
}

func composeVolumes(t *testing.T, service string, s map[string]any) []composeVolume {
	t.Helper()
	var out []composeVolume
	for _, v := range list(s["volumes"]) {
		switch v := v.(type) {
		case string:
			parts := strings.Split(v, ":")
			if len(parts) < 2 {
				t.Fatalf("%s: volume %q, want SRC:DST[:MODE]", service, v)
			}
			out = append(out, composeVolume{source: parts[0], target: parts[1], readOnly: len(parts) > 2 && strings.Contains(parts[2], "ro")})
		case map[string]any:
			ro, _ := v["read_only"].(bool)
			out = append(out, composeVolume{source: str(v["source"]), target: str(v["target"]), subpath: str(dig(v, "volume", "subpath")), readOnly: ro})
		default:
			t.Fatalf("%s: volume %v (%T)", service, v, v)
		}
	}
	return out
}

func isLoraft(s map[string]any) bool {
	return strings.Contains(str(s["image"]), "loraft") && s["entrypoint"] == nil
}

// composeEnv maps a service's environment (mapping or KEY=VALUE list).
func composeEnv(t *testing.T, s map[string]any) map[string]string {
	t.Helper()
	out := map[string]string{}
	switch e := s["environment"].(type) {
	case map[string]any:
		for k, v := range e {
			out[k] = str(v)
		}
	case []any:
		for _, kv := range e {
			k, v, _ := strings.Cut(str(kv), "=")
			out[k] = v
		}
	}
	return out
}

func TestCompose(t *testing.T) {
	svcs := composeServices(t, "compose/compose.yaml")
	top := loadYAML(t, "compose/compose.yaml")[0].v
	for _, name := range []string{"minio", "n1", "n2", "n3", "trainer1", "trainer2", "cli"} {
		if svcs[name] == nil {
			t.Fatalf("no service %s", name)
		}
	}
	if img := str(svcs["minio"]["image"]); !strings.HasPrefix(img, "${MINIO_IMAGE:-minio/minio:") && !strings.HasPrefix(img, "minio/minio:") {
		t.Errorf("minio image %q", img)
	}
	if cmd := strList(t, "minio command", svcs["minio"]["command"]); len(cmd) < 2 || cmd[0] != "server" || cmd[1] != "/data" {
		t.Errorf("minio command %q, want server /data …", cmd)
	}

	// Coordinators: one raft group, each member at its service name, state in its own volume.
	var peers string
	var members []peer
	volumes := mapping(top["volumes"])
	usedVolumes := map[string]string{}
	for _, name := range []string{"n1", "n2", "n3"} {
		s := svcs[name]
		args := strList(t, name+" command", s["command"])
		if err := checkInvocation(args); err != nil || args[0] != "coordinator" {
			t.Fatalf("%s: %v %q", name, err, args)
		}
		p := mustFlag(t, name, args, "peers")
		if peers == "" {
			peers, members = p, parsePeers(t, p)
		} else if p != peers {
			t.Errorf("%s: --peers differs between coordinators", name)
		}
		if id := mustFlag(t, name, args, "id"); id != name {
			t.Errorf("%s: --id %q, want the service name", name, id)
		}
		var self *peer
		for i := range members {
			if members[i].id == name {
				self = &members[i]
			}
		}
		if self == nil {
			t.Fatalf("%s is not in --peers %q", name, peers)
		}
		if ra := mustFlag(t, name, args, "raft-addr"); ra != self.raft {
			t.Errorf("%s: --raft-addr %q, --peers says %q", name, ra, self.raft)
		}
		if host, _ := hostPort(t, self.raft); host != name {
			t.Errorf("%s: raft host %q is not its service name", name, host)
		}
		if host, _ := hostPort(t, self.api); host != name {
			t.Errorf("%s: API host %q is not its service name", name, host)
		}
		_, apiPort := hostPort(t, self.api)
		if _, listen := hostPort(t, mustFlag(t, name, args, "api-addr")); listen != apiPort {
			t.Errorf("%s: --api-addr port %d, --peers gives API port %d", name, listen, apiPort)
		}
		dir := mustFlag(t, name, args, "dir")
		found := false
		for _, v := range composeVolumes(t, name, s) {
			src, dst := v.source, v.target
			if dst == dir {
				if _, named := volumes[src]; !named {
					t.Errorf("%s: --dir %s is on %q, not a named volume", name, dir, src)
				}
				if other, dup := usedVolumes[src]; dup {
					t.Errorf("%s and %s share the raft volume %s", other, name, src)
				}
				usedVolumes[src], found = name, true
			}
		}
		if !found {
			t.Errorf("%s: --dir %s is not on a volume: raft state would not survive the container", name, dir)
		}
		if mustFlag(t, name, args, "raft-profile") != "fast" {
			t.Errorf("%s: want --raft-profile fast on one Docker host", name)
		}
		hc := mapping(s["healthcheck"])
		test := strList(t, name+" healthcheck", hc["test"])
		if len(test) < 2 || test[0] != "CMD" || test[1] != "loraft" {
			t.Errorf("%s: healthcheck %q does not run loraft", name, test)
		} else if err := checkInvocation(test[2:]); err != nil {
			t.Errorf("%s healthcheck: %v", name, err)
		}
	}
	if len(members) != 3 {
		t.Fatalf("--peers names %d members, want 3", len(members))
	}
	var apis []string
	for _, m := range members {
		apis = append(apis, m.api)
	}
	if hc := mapping(svcs["minio"]["healthcheck"]); hc == nil {
		t.Errorf("minio has no healthcheck (trainers wait for it)")
	}

	// Trainers and the CLI: the coordinators' APIs, the MinIO store, credentials by reference.
	for _, name := range []string{"trainer1", "trainer2", "cli"} {
		s := svcs[name]
		env := composeEnv(t, s)
		if env["LORAFT_COORDINATORS"] != strings.Join(apis, ",") {
			t.Errorf("%s: LORAFT_COORDINATORS %q, want %q", name, env["LORAFT_COORDINATORS"], strings.Join(apis, ","))
		}
		if !strings.HasPrefix(env["LORAFT_STORE"], "s3://") {
			t.Errorf("%s: LORAFT_STORE %q", name, env["LORAFT_STORE"])
		}
		if host, port := hostPort(t, env["LORAFT_S3_ENDPOINT"]); host != "minio" || port != 9000 {
			t.Errorf("%s: LORAFT_S3_ENDPOINT %q, want minio:9000", name, env["LORAFT_S3_ENDPOINT"])
		}
		for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
			if env[k] == "" {
				t.Errorf("%s: no %s", name, k)
			}
		}
		deps := mapping(s["depends_on"])
		for _, d := range []string{"minio", "n1", "n2", "n3"} {
			if dig(deps, d, "condition") != "service_healthy" {
				t.Errorf("%s does not wait for %s to be healthy", name, d)
			}
		}
		if name == "cli" {
			mountsExperiments := false
			for _, v := range composeVolumes(t, "cli", s) {
				mountsExperiments = mountsExperiments || v.source == "../../experiments"
			}
			if !mountsExperiments {
				t.Errorf("cli does not mount the experiments")
			}
			continue
		}
		args := strList(t, name+" command", s["command"])
		if err := checkInvocation(args); err != nil || args[0] != "trainer" {
			t.Fatalf("%s: %v %q", name, err, args)
		}
		if host, _ := hostPort(t, mustFlag(t, name, args, "listen")); host != name {
			t.Errorf("%s: --listen host %q: other ranks dial it, want the service name", name, host)
		}
	}

	// One network for everyone; loraft services build or name the loraft image.
	for name, s := range svcs {
		if nets := strList(t, name+" networks", s["networks"]); len(nets) != 1 || nets[0] != "loraft" {
			t.Errorf("%s: networks %v, want [loraft]", name, nets)
		}
		if strings.HasPrefix(name, "minio") {
			continue
		}
		if name != "certs" && !isLoraft(s) { // certs runs a script of loraft commands
			t.Errorf("%s does not run the loraft image's entrypoint", name)
		}
		if str(dig(s, "build", "dockerfile")) != "deploy/docker/Dockerfile.cpu" {
			t.Errorf("%s: build.dockerfile %v", name, dig(s, "build", "dockerfile"))
		}
	}
	if ctx := str(dig(svcs["n1"], "build", "context")); filepath.Clean(filepath.Join("compose", ctx)) != ".." {
		t.Errorf("build context %q is not the repository root", ctx)
	}

	// The GPU override changes trainers only, each to the CUDA image on its GPU.
	gpu := composeServices(t, "compose/compose.gpu.yaml")
	for name, s := range gpu {
		if !strings.HasPrefix(name, "trainer") || svcs[name] == nil {
			t.Errorf("compose.gpu.yaml overrides %s, which is not a trainer of compose.yaml", name)
			continue
		}
		args := strList(t, name+" command", s["command"])
		if err := checkInvocation(args); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if d := mustFlag(t, name, args, "device"); !strings.HasPrefix(d, "cuda") {
			t.Errorf("%s: --device %q", name, d)
		}
		if l := mustFlag(t, name, args, "listen"); l != mustFlag(t, name, strList(t, name+" command", svcs[name]["command"]), "listen") {
			t.Errorf("%s: --listen %q differs from compose.yaml's", name, l)
		}
		if str(dig(s, "build", "dockerfile")) != "deploy/docker/Dockerfile.cuda" {
			t.Errorf("%s builds %v", name, dig(s, "build", "dockerfile"))
		}
		if len(list(dig(s, "deploy", "resources", "reservations", "devices"))) != 1 {
			t.Errorf("%s reserves no GPU", name)
		}
	}
}

// ---------------------------------------------------------------- secrets

var (
	// secretish names a credential: such a name in a command line means a secret may be there.
	secretish   = regexp.MustCompile(`(?i)(secret|password|passwd|access[-_]?key|private[-_]?key|token)`)
	placeholder = regexp.MustCompile(`(?i)change[-_]?me`)
	interpolate = regexp.MustCompile(`^\$\{[A-Z_][A-Z0-9_]*(:?[-?][^}]*)?\}$`)
)

// commandLine is one command a deployment file runs, for the secret and flag checks.
type commandLine struct {
	where  string
	words  []string
	loraft []string // the loraft arguments when it runs loraft directly
}

// commandLines collects every command line of compose, Kubernetes and the Dockerfiles.
func commandLines(t *testing.T) []commandLine {
	t.Helper()
	var out []commandLine
	add := func(where string, words []string, loraftArgs bool) {
		if len(words) == 0 {
			return
		}
		cl := commandLine{where: where, words: words}
		if loraftArgs {
			cl.loraft = words
		}
		out = append(out, cl)
		for _, w := range words {
			if !strings.Contains(w, "\n") {
				continue // scripts only: [sh -c SCRIPT]
			}
			for _, args := range loraftInScript(t, w) {
				out = append(out, commandLine{where: where + " (script)", words: args, loraft: args})
			}
		}
	}
	for _, f := range yamlFiles(t, "compose") {
		for name, s := range composeServices(t, f) {
			where := f + " " + name
			if s["command"] != nil {
				add(where+" command", strList(t, where, s["command"]), isLoraft(s))
			}
			if s["entrypoint"] != nil {
				add(where+" entrypoint", strList(t, where, s["entrypoint"]), false)
			}
			if test := strList(t, where, dig(s, "healthcheck", "test")); len(test) > 1 && test[0] == "CMD" {
				add(where+" healthcheck", test[1:], false)
				if test[1] == "loraft" {
					out = append(out, commandLine{where: where + " healthcheck", words: test[1:], loraft: test[2:]})
				}
			}
		}
	}
	for _, f := range yamlFiles(t, "k8s") {
		for _, d := range loadYAML(t, f) {
			for _, c := range containers(d.v) {
				where := fmt.Sprintf("%s container %s", d, c["name"])
				cmd := strList(t, where, c["command"])
				args := strList(t, where, c["args"])
				add(where+" command", cmd, false)
				// No command: the args go to the image's entrypoint, loraft (a patch names no image),
				// unless the patch's container runs the base's script, which passes them on ("$@").
				img := str(c["image"])
				if len(cmd) == 0 && img == "" {
					if script := baseScript(t, d, str(c["name"])); script != "" {
						for _, run := range loraftInScript(t, script) {
							var words []string
							for _, w := range run {
								if w == "$@" {
									words = append(words, args...)
								} else {
									words = append(words, w)
								}
							}
							out = append(out, commandLine{where: where + " args (base script)", words: words, loraft: words})
						}
						continue
					}
				}
				add(where+" args", args, len(cmd) == 0 && (img == "" || strings.HasPrefix(img, "loraft")))
				for _, probe := range []string{"readinessProbe", "livenessProbe", "startupProbe"} {
					pc := strList(t, where, dig(c, probe, "exec", "command"))
					add(where+" "+probe, pc, false)
					if len(pc) > 0 && pc[0] == "loraft" {
						out = append(out, commandLine{where: where + " " + probe, words: pc, loraft: pc[1:]})
					}
				}
			}
		}
	}
	for _, f := range dockerfiles(t) {
		for _, in := range parseDockerfile(t, f) {
			if in.cmd != "RUN" && in.cmd != "CMD" && in.cmd != "ENTRYPOINT" {
				continue
			}
			where := fmt.Sprintf("%s:%d %s", f, in.line, in.cmd)
			words := in.jsonArgs
			if words == nil {
				var err error
				if words, err = shellWords(in.args); err != nil {
					t.Fatalf("%s: %v", where, err)
				}
			}
			out = append(out, commandLine{where: where, words: words})
			if in.cmd != "RUN" {
				if in.cmd == "CMD" { // arguments of the ENTRYPOINT, loraft
					out = append(out, commandLine{where: where, words: words, loraft: words})
				}
				continue
			}
			for _, part := range splitCommands(words) {
				if len(part) > 0 && (part[0] == "loraft" || part[0] == "bin/loraft") {
					out = append(out, commandLine{where: where, words: part, loraft: part[1:]})
				}
			}
		}
	}
	return out
}

// baseScript returns the shell script the base manifest's container name of the object d
// patches runs ([/bin/sh -ec SCRIPT …]), or "".
func baseScript(t *testing.T, d yamlDoc, name string) string {
	t.Helper()
	for _, b := range k8sObjects(t, "k8s/base") {
		if b.v["kind"] != d.v["kind"] || dig(b.v, "metadata", "name") != dig(d.v, "metadata", "name") {
			continue
		}
		for _, c := range containers(b.v) {
			if cmd := strList(t, "command", c["command"]); c["name"] == name && len(cmd) >= 3 && cmd[0] == "/bin/sh" {
				return cmd[2]
			}
		}
	}
	return ""
}

// splitCommands splits shell words at &&, ||, ; and |.
func splitCommands(words []string) [][]string {
	var out [][]string
	var cur []string
	for _, w := range words {
		if w == "&&" || w == "||" || w == ";" || w == "|" {
			out = append(out, cur)
			cur = nil
			continue
		}
		cur = append(cur, w)
	}
	return append(out, cur)
}

func TestNoSecretsInCommandLines(t *testing.T) {
	lines := commandLines(t)
	if len(lines) < 20 {
		t.Fatalf("found only %d command lines: the collector is broken", len(lines))
	}
	for _, cl := range lines {
		for _, w := range cl.words {
			// The coordinator script is one word: look at its lines' words too.
			for _, line := range strings.Split(w, "\n") {
				words, err := shellWords(line)
				if err != nil {
					words = []string{line}
				}
				for _, x := range words {
					if secretish.MatchString(x) {
						t.Errorf("%s: %q names a credential on a command line (ps shows it): use the environment or a file", cl.where, x)
					}
				}
			}
		}
	}
}

func TestSecretsOnlyByReference(t *testing.T) {
	// Kubernetes: credential variables come from a Secret, never a literal.
	for _, f := range yamlFiles(t, "k8s") {
		for _, d := range loadYAML(t, f) {
			for _, c := range containers(d.v) {
				for name, e := range envOf(c) {
					if secretish.MatchString(name) && dig(e, "valueFrom", "secretKeyRef") == nil {
						t.Errorf("%s: env %s is not from a secretKeyRef", d, name)
					}
				}
			}
			if d.v["kind"] == "Secret" {
				if !strings.HasSuffix(f, ".example.yaml") {
					t.Errorf("%s: a Secret outside an *.example.yaml file", f)
				}
				for k, v := range mapping(d.v["stringData"]) {
					if !placeholder.MatchString(str(v)) {
						t.Errorf("%s: %s = %q is not a CHANGE-ME placeholder", f, k, v)
					}
				}
				if d.v["data"] != nil {
					t.Errorf("%s: base64 data in the example Secret", f)
				}
			}
		}
	}
	// Compose: credential variables are ${…} from .env, whose example holds placeholders.
	for _, f := range yamlFiles(t, "compose") {
		for name, s := range composeServices(t, f) {
			for k, v := range composeEnv(t, s) {
				if secretish.MatchString(k) && !interpolate.MatchString(v) {
					t.Errorf("%s %s: %s = %q, want ${VAR} from .env", f, name, k, v)
				}
			}
		}
	}
	data, err := os.ReadFile("compose/.env.example")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		if strings.HasPrefix(k, "MINIO_ROOT_") {
			seen++
			if !placeholder.MatchString(v) {
				t.Errorf(".env.example: %s = %q is not a CHANGE-ME placeholder", k, v)
			}
		}
	}
	if seen != 2 {
		t.Errorf(".env.example sets %d MINIO_ROOT_* variables, want the user and the password", seen)
	}
	for _, f := range []string{"compose/.gitignore", "k8s/base/.gitignore"} {
		data, err := os.ReadFile(f)
		if err != nil || !strings.Contains(string(data), map[string]string{"compose/.gitignore": ".env", "k8s/base/.gitignore": "secret.yaml"}[f]) {
			t.Errorf("%s does not ignore the filled-in credentials (%v)", f, err)
		}
	}
	// MinIO's well-known default credentials appear nowhere.
	err = filepath.WalkDir(".", func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || p == "deploy_test.go" {
			return err
		}
		if !strings.HasPrefix(p, "compose") && !strings.HasPrefix(p, "k8s") && !strings.HasPrefix(p, "docker") && p != "README.md" {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.Contains(strings.ToLower(string(data)), "minioadmin") {
			t.Errorf("%s contains MinIO's default credentials", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------- loraft command lines

// readmeCommands returns the loraft argument lists of deploy/README.md's examples:
// `docker compose run … cli ARGS` and `kubectl … -- loraft ARGS`.
func readmeCommands(t *testing.T) [][]string {
	t.Helper()
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for _, line := range strings.Split(strings.ReplaceAll(string(data), "\\\n", " "), "\n") {
		all, err := shellWords(line)
		if err != nil {
			continue
		}
		for _, words := range splitCommands(all) {
			if args, ok := readmeLoraftArgs(words); ok {
				out = append(out, args)
			}
		}
	}
	return out
}

// readmeLoraftArgs returns the loraft arguments of one README command, if it runs loraft.
func readmeLoraftArgs(words []string) ([]string, bool) {
	if len(words) < 3 {
		return nil, false
	}
	switch {
	case words[0] == "docker" && words[1] == "compose" && slices.Contains(words, "run"):
		// docker compose run [--rm] [--user U] [-v V] cli ARGS
		i := slices.Index(words, "run") + 1
		for i < len(words) && strings.HasPrefix(words[i], "-") {
			if words[i] == "--user" || words[i] == "-v" || words[i] == "-e" || words[i] == "--volume" {
				i++
			}
			i++
		}
		if i < len(words) && words[i] == "cli" {
			return words[i+1:], true
		}
	case words[0] == "kubectl":
		if i := slices.Index(words, "--"); i > 0 && i+1 < len(words) && words[i+1] == "loraft" {
			return words[i+2:], true
		}
	case words[0] == "docker" && words[1] == "run":
		if i := slices.IndexFunc(words, func(w string) bool { return strings.HasPrefix(w, "loraft:") }); i > 0 {
			return words[i+1:], true
		}
	}
	return nil, false
}

func TestLoraftCommandLines(t *testing.T) {
	var all []commandLine
	for _, cl := range commandLines(t) {
		if cl.loraft != nil {
			all = append(all, cl)
		}
	}
	readme := readmeCommands(t)
	if len(readme) < 6 {
		t.Errorf("found %d loraft commands in README.md, want the compose and kubectl examples", len(readme))
	}
	for i, args := range readme {
		all = append(all, commandLine{where: fmt.Sprintf("README.md example %d", i+1), loraft: args})
	}
	used := map[string]bool{}
	for _, cl := range all {
		if err := checkInvocation(cl.loraft); err != nil {
			t.Errorf("%s: loraft %s: %v", cl.where, strings.Join(cl.loraft, " "), err)
		}
		if len(cl.loraft) > 0 {
			used[cl.loraft[0]] = true
		}
	}
	// The files run every role: a collector that finds none of them is broken.
	for _, role := range []string{"coordinator", "trainer", "sweep", "version"} {
		if !used[role] {
			t.Errorf("no command line runs loraft %s", role)
		}
	}
	// LORAFT_* variables set anywhere are ones the CLI reads.
	for _, f := range yamlFiles(t, "compose", "k8s") {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// compose mapping keys (KEY: v), list entries (- KEY=v), Kubernetes env (name: KEY)
		for _, m := range regexp.MustCompile(`(?m)^\s*(?:-\s*)?(?:name:\s*)?(LORAFT_[A-Z0-9_]+)\s*[:=\n]`).FindAllStringSubmatch(string(data)+"\n", -1) {
			v := m[1]
			if !slices.Contains(cliEnv, v) {
				t.Errorf("%s sets %s, which loraft does not read", f, v)
			}
		}
	}
}

// ---------------------------------------------------------------- Dockerfiles

type instruction struct {
	line     int
	cmd      string
	args     string
	jsonArgs []string // exec form of RUN/CMD/ENTRYPOINT
	stage    int
}

func dockerfiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("docker/Dockerfile.*")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		if !strings.HasSuffix(f, ".dockerignore") {
			out = append(out, f)
		}
	}
	if len(out) != 2 {
		t.Fatalf("Dockerfiles %v, want Dockerfile.cpu and Dockerfile.cuda", out)
	}
	return out
}

// parseDockerfile reads instructions, joining continuation lines and dropping comments.
func parseDockerfile(t *testing.T, file string) []instruction {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	stage := -1
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if s, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		text := cur.String()
		cur.Reset()
		cmd, args, _ := strings.Cut(text, " ")
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			stage++
		}
		in := instruction{line: start, cmd: cmd, args: strings.TrimSpace(args), stage: stage}
		if (cmd == "RUN" || cmd == "CMD" || cmd == "ENTRYPOINT") && strings.HasPrefix(in.args, "[") {
			if err := yaml.Unmarshal([]byte(in.args), &in.jsonArgs); err != nil {
				t.Fatalf("%s:%d: %s %s: %v", file, start, cmd, in.args, err)
			}
		}
		if cmd == "RUN" {
			// Drop BuildKit's --mount options.
			for strings.HasPrefix(in.args, "--") {
				_, in.args, _ = strings.Cut(in.args, " ")
				in.args = strings.TrimSpace(in.args)
			}
		}
		out = append(out, in)
	}
	if cur.Len() > 0 {
		t.Fatalf("%s ends in a continuation line", file)
	}
	return out
}

// dockerignored reports whether a context path is excluded by the Dockerfile's ignore file
// (the top-level patterns used here: a leading / or none anchors at the context root).
func dockerignored(t *testing.T, ignoreFile, path string) bool {
	t.Helper()
	data, err := os.ReadFile(ignoreFile)
	if err != nil {
		t.Fatal(err)
	}
	ignored := false
	for _, line := range strings.Split(string(data), "\n") {
		p := strings.TrimSpace(line)
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(strings.TrimPrefix(p, "!"), "/")
		p = strings.TrimSuffix(p, "/")
		match := path == p || strings.HasPrefix(path, p+"/")
		if ok, _ := filepath.Match(p, path); ok {
			match = true
		}
		if match {
			ignored = !neg
		}
	}
	return ignored
}

var goDirective = regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`)

func TestDockerfiles(t *testing.T) {
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := goDirective.FindStringSubmatch(string(gomod))
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	modMajor, _ := strconv.Atoi(m[1])
	modMinor, _ := strconv.Atoi(m[2])

	for _, tc := range []struct {
		file         string
		runtimeImage *regexp.Regexp
		runtimeRun   []string // the runtime stage installs or runs these
		shimFrom     string   // the stage lib/libtch.so is copied from
	}{
		{"docker/Dockerfile.cpu", regexp.MustCompile(`^debian:bookworm-slim$`), []string{"libtorch1.13", "libopenblas0-pthread", "loraft version"}, "build"},
		{"docker/Dockerfile.cuda", regexp.MustCompile(`^pytorch/pytorch:[0-9.]+-cuda[0-9.]+-cudnn[0-9]+-runtime$`), []string{"loraft version"}, "shim"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			ins := parseDockerfile(t, tc.file)
			args := map[string]string{}
			type stage struct{ image, name string }
			var stages []stage
			for _, in := range ins {
				switch in.cmd {
				case "ARG":
					if k, v, ok := strings.Cut(in.args, "="); ok && in.stage < 0 {
						args[k] = v
					}
				case "FROM":
					f := strings.Fields(in.args)
					img := os.Expand(f[0], func(k string) string { return args[k] })
					name := ""
					if len(f) == 3 && strings.EqualFold(f[1], "AS") {
						name = f[2]
					}
					stages = append(stages, stage{img, name})
				}
			}
			if len(stages) < 2 {
				t.Fatalf("stages %v: want a builder and a runtime stage", stages)
			}
			// The Go builder: golang:1.26-bookworm, new enough for go.mod.
			builder := stages[0]
			gm := regexp.MustCompile(`^golang:(\d+)\.(\d+)-bookworm$`).FindStringSubmatch(builder.image)
			if gm == nil {
				t.Fatalf("builder image %q, want golang:X.Y-bookworm (make build's apt steps are Debian's)", builder.image)
			}
			if maj, _ := strconv.Atoi(gm[1]); maj != modMajor {
				t.Errorf("builder Go %s.%s vs go.mod %d.%d", gm[1], gm[2], modMajor, modMinor)
			} else if minor, _ := strconv.Atoi(gm[2]); minor < modMinor {
				t.Errorf("builder Go %s.%s is older than go.mod's go %d.%d", gm[1], gm[2], modMajor, modMinor)
			}
			runtime := stages[len(stages)-1]
			if !tc.runtimeImage.MatchString(runtime.image) {
				t.Errorf("runtime image %q, want %s", runtime.image, tc.runtimeImage)
			}
			last := len(stages) - 1
			var runtimeText, buildText strings.Builder
			var entrypoint []string
			copies := map[string]string{} // destination of bin/loraft and libtch.so
			type copyIn struct {
				stage    int
				from     string
				src      []string
				dst      string
				workdir  string
				fromWork string
			}
			var copyIns []copyIn
			workdirs := map[int]string{}
			for _, in := range ins {
				switch {
				case in.stage == last && in.cmd == "RUN":
					runtimeText.WriteString(in.args + "\n")
				case in.stage == 0 && in.cmd == "RUN":
					buildText.WriteString(in.args + "\n")
				}
				if in.stage == last && in.cmd == "ENTRYPOINT" {
					entrypoint = in.jsonArgs
				}
				if in.cmd == "WORKDIR" {
					workdirs[in.stage] = in.args
				}
				if in.cmd != "COPY" {
					continue
				}
				f := strings.Fields(in.args)
				from := ""
				if v, ok := strings.CutPrefix(f[0], "--from="); ok {
					from, f = v, f[1:]
				}
				src, dst := f[:len(f)-1], f[len(f)-1]
				ci := copyIn{stage: in.stage, from: from, src: src, dst: dst, workdir: workdirs[in.stage]}
				for i, st := range stages {
					if st.name == from {
						ci.fromWork = workdirs[i]
					}
				}
				copyIns = append(copyIns, ci)
				for _, s := range src {
					if from == "" {
						// From the build context: it exists and is not ignored.
						if _, err := os.Stat(filepath.Join("..", s)); err != nil && s != "." {
							t.Errorf("line %d: COPY %s: %v", in.line, s, err)
						}
						if s != "." && dockerignored(t, tc.file+".dockerignore", filepath.Clean(s)) {
							t.Errorf("line %d: COPY %s, but the .dockerignore excludes it", in.line, s)
						}
					}
					if in.stage == last && (strings.HasSuffix(s, "/bin/loraft") || strings.HasSuffix(s, "/libtch.so")) {
						copies[filepath.Base(s)] = dst
						if filepath.Base(s) == "libtch.so" && from != tc.shimFrom {
							t.Errorf("line %d: libtch.so from stage %q, want %q", in.line, from, tc.shimFrom)
						}
					}
				}
			}
			if !strings.Contains(buildText.String(), "make build") {
				t.Errorf("the builder does not run make build")
			}
			for _, want := range tc.runtimeRun {
				if !strings.Contains(runtimeText.String(), want) {
					t.Errorf("the runtime stage does not run/install %q", want)
				}
			}
			if !slices.Equal(entrypoint, []string{"loraft"}) {
				t.Errorf("ENTRYPOINT %q, want [\"loraft\"]", entrypoint)
			}
			// bin/loraft finds the shim through its rpath $ORIGIN/../lib.
			bin, lib := copies["loraft"], copies["libtch.so"]
			if bin == "" || lib == "" {
				t.Fatalf("the runtime stage copies bin/loraft to %q and libtch.so to %q", bin, lib)
			}
			if filepath.Base(filepath.Dir(bin)) != "bin" || filepath.Join(filepath.Dir(filepath.Dir(bin)), "lib") != filepath.Clean(lib) {
				t.Errorf("loraft at %s, libtch.so in %s: not $ORIGIN/../lib", bin, lib)
			}
			if tc.shimFrom == "shim" {
				// The CUDA shim is built against the PyTorch image's libtorch (README: GPU machines).
				shim := stages[1]
				if shim.image != runtime.image || shim.name != "shim" {
					t.Errorf("shim stage %v: want the runtime image %s (the shim's rpath points into it)", shim, runtime.image)
				}
				var shimArgs []string
				for _, in := range ins {
					if in.stage != 1 || in.cmd != "RUN" {
						continue
					}
					words, err := shellWords(in.args)
					if err != nil {
						t.Fatal(err)
					}
					for _, part := range splitCommands(words) {
						if len(part) > 0 && part[0] == "deploy/build-shim.sh" {
							shimArgs = part[1:]
						}
					}
				}
				if shimArgs == nil {
					t.Fatalf("the shim stage does not run deploy/build-shim.sh (README: GPU machines)")
				}
				abs := func(dir, p string) string {
					if path.IsAbs(p) {
						return path.Clean(p)
					}
					return path.Join(dir, p)
				}
				src := abs(workdirs[1], mustFlag(t, "build-shim.sh", shimArgs, "src"))
				out := abs(workdirs[1], mustFlag(t, "build-shim.sh", shimArgs, "out"))
				gotSrc, gotLib := false, false
				for _, c := range copyIns {
					if c.stage == 1 && c.from == "build" && abs(c.workdir, c.dst) == src && path.Base(c.src[0]) == "csrc" {
						gotSrc = true
					}
					if c.stage == last && c.from == "shim" && slices.Contains(c.src, path.Join(out, "libtch.so")) {
						gotLib = true
					}
				}
				if !gotSrc {
					t.Errorf("build-shim.sh --src %s: the shim stage does not copy gotch's csrc there from the build stage", src)
				}
				if !gotLib {
					t.Errorf("build-shim.sh --out %s: the runtime stage does not copy %s/libtch.so", out, out)
				}
			}

			// What the build needs from the context is in it: go.mod, make build's inputs, every
			// Go package, and whatever later stages copy out of the build stage's source tree.
			ignore := tc.file + ".dockerignore"
			needed := []string{"go.mod", "go.sum", "Makefile", "deploy/setup.sh", "deploy/libtorch.sh",
				"deploy/build-shim.sh", "deploy/gotch", "shard/wordpiece/vocab"}
			tops, err := os.ReadDir("..")
			if err != nil {
				t.Fatal(err)
			}
			generated := []string{"bin", "lib", "third_party", "out"} // made by make build, or its output
			for _, e := range tops {
				if !e.IsDir() || strings.HasPrefix(e.Name(), ".") || slices.Contains(generated, e.Name()) {
					continue
				}
				if gofiles, _ := filepath.Glob(filepath.Join("..", e.Name(), "*.go")); len(gofiles) > 0 {
					needed = append(needed, e.Name())
				}
			}
			for _, c := range copyIns {
				if c.from != "build" || c.fromWork == "" {
					continue
				}
				for _, s := range c.src {
					rel, err := filepath.Rel(c.fromWork, s)
					if err != nil || strings.HasPrefix(rel, "..") {
						continue
					}
					if first := strings.Split(rel, "/")[0]; !slices.Contains(generated, first) {
						needed = append(needed, rel)
					}
				}
			}
			for _, n := range needed {
				if _, err := os.Stat(filepath.Join("..", n)); err != nil {
					t.Errorf("the build needs %s: %v", n, err)
				}
				if dockerignored(t, ignore, n) {
					t.Errorf("%s excludes %s, which the build needs", ignore, n)
				}
			}
		})
	}
}
