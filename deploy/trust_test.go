package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/loraft/loraft/checkpoint"
)

// The trust set-up of the deployment files (issue #11): mutual TLS everywhere with
// certificates from mounted, read-only secrets, per-role S3 users with narrow MinIO policies,
// HTTPS to the store, and NetworkPolicies that only let the right components talk.

const certDir = "/etc/loraft/tls"

// tlsFlagsOf returns --tls-ca, --tls-cert and --tls-key of a loraft argument list, failing the
// test when one is missing or --insecure is there.
func tlsFlagsOf(t *testing.T, what string, args []string) (ca, cert, key string) {
	t.Helper()
	if slices.ContainsFunc(args, func(a string) bool { return a == "--insecure" || strings.HasPrefix(a, "--insecure=") }) {
		t.Errorf("%s runs with --insecure", what)
	}
	return mustFlag(t, what, args, "tls-ca"), mustFlag(t, what, args, "tls-cert"), mustFlag(t, what, args, "tls-key")
}

// TestNoInsecureAnywhere: no manifest, override or script of the deployment turns TLS off.
func TestNoInsecureAnywhere(t *testing.T) {
	files := yamlFiles(t, "compose", "k8s")
	for _, dir := range []string{"minio", "k8s/base/minio"} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			files = append(files, path.Join(dir, e.Name()))
		}
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte("--insecure")) || bytes.Contains(data, []byte("LORAFT_INSECURE")) {
			t.Errorf("%s turns TLS off (--insecure)", f)
		}
	}
	for _, cl := range commandLines(t) {
		if slices.Contains(cl.loraft, "--insecure") {
			t.Errorf("%s: loraft %s", cl.where, strings.Join(cl.loraft, " "))
		}
	}
}

// TestComposeTLS: every coordinator, trainer, health check and the CLI present the certificate
// of their own identity, mounted read-only from the pki volume that the certs service fills,
// whose SANs are the names the others dial.
func TestComposeTLS(t *testing.T) {
	svcs := composeServices(t, "compose/compose.yaml")
	gpu := composeServices(t, "compose/compose.gpu.yaml")
	certsInit, certsIssue := certsCommands(t, svcs["certs"])
	if len(certsInit) == 0 || len(certsIssue) == 0 {
		t.Fatal("the certs service does not run `loraft certs init` and `loraft certs issue`")
	}
	initIDs := map[string][]string{
		"coordinator": splitComma(mustFlag(t, "certs init", certsInit, "coordinator-ids")),
		"trainer":     splitComma(mustFlag(t, "certs init", certsInit, "trainer-ids")),
		"operator":    splitComma(mustFlag(t, "certs init", certsInit, "operator-ids")),
	}
	// mountedCert checks that a service mounts role-id's directory of the pki volume
	// read-only at certDir, and that the flags point into it.
	mountedCert := func(name string, s map[string]any, role, id string, ca, cert, key string) {
		t.Helper()
		if want := []string{certDir + "/ca.pem", certDir + "/cert.pem", certDir + "/key.pem"}; !slices.Equal([]string{ca, cert, key}, want) {
			t.Errorf("%s: TLS files %q, want %q", name, []string{ca, cert, key}, want)
		}
		found := false
		for _, v := range composeVolumes(t, name, s) {
			if v.target != certDir {
				continue
			}
			found = true
			if v.source != "pki" || v.subpath != role+"-"+id || !v.readOnly {
				t.Errorf("%s: %s is %+v, want the pki volume's %s-%s, read-only", name, certDir, v, role, id)
			}
		}
		if !found {
			t.Errorf("%s: nothing mounted at %s", name, certDir)
		}
		if !slices.Contains(initIDs[role], id) {
			t.Errorf("%s: `certs init` issues no %s certificate for %s (%v)", name, role, id, initIDs[role])
		}
		if dig(s, "depends_on", "certs", "condition") != "service_completed_successfully" {
			t.Errorf("%s does not wait for the certs service", name)
		}
	}
	hosts := splitComma(mustFlag(t, "certs init", certsInit, "coordinator-hosts"))
	for name, s := range svcs {
		args := strList(t, name+" command", s["command"])
		if !isLoraft(s) || len(args) == 0 || (args[0] != "coordinator" && args[0] != "trainer") {
			continue
		}
		ca, cert, key := tlsFlagsOf(t, name, args)
		id := mustFlag(t, name, args, "id")
		mountedCert(name, s, args[0], id, ca, cert, key)
		if g := gpu[name]; g != nil {
			gca, gcert, gkey := tlsFlagsOf(t, "compose.gpu.yaml "+name, strList(t, name, g["command"]))
			if gca != ca || gcert != cert || gkey != key {
				t.Errorf("compose.gpu.yaml %s: TLS flags differ from compose.yaml's", name)
			}
		}
		switch args[0] {
		case "coordinator":
			// The health check reads as the coordinator itself, at 127.0.0.1, which its
			// certificate must name.
			test := strList(t, name+" healthcheck", dig(s, "healthcheck", "test"))
			hca, hcert, hkey := tlsFlagsOf(t, name+" healthcheck", test)
			if hca != ca || hcert != cert || hkey != key {
				t.Errorf("%s: the health check does not use the coordinator's certificate", name)
			}
			if host, _ := hostPort(t, mustFlag(t, name+" healthcheck", test, "coordinators")); !slices.Contains(hosts, host) {
				t.Errorf("%s: the health check dials %s, which --coordinator-hosts %v does not name", name, host, hosts)
			}
		case "trainer":
			// Its certificate names its id (certs init adds it): the only host it may register.
			if host, _ := hostPort(t, mustFlag(t, name, args, "listen")); host != id {
				t.Errorf("%s: --listen host %q is not its id %q, the name its certificate carries", name, host, id)
			}
		}
	}
	// The CLI: the operator's certificate through the LORAFT_TLS_* variables.
	cli := svcs["cli"]
	env := composeEnv(t, cli)
	mountedCert("cli", cli, "operator", initIDs["operator"][0], env["LORAFT_TLS_CA"], env["LORAFT_TLS_CERT"], env["LORAFT_TLS_KEY"])
	// MinIO: HTTPS with a store certificate for the name the clients use, from the same volume.
	minio := svcs["minio"]
	cmd := strList(t, "minio command", minio["command"])
	dir := mustFlag(t, "minio", cmd, "certs-dir")
	if mustFlag(t, "certs issue", certsIssue, "role") != "store" || mustFlag(t, "certs issue", certsIssue, "id") != "minio" {
		t.Errorf("certs issue %q: want the store's certificate, id minio", certsIssue)
	}
	storeHosts := splitComma(mustFlag(t, "certs issue", certsIssue, "hosts"))
	for _, name := range []string{"trainer1", "cli"} {
		e := composeEnv(t, svcs[name])
		host, _ := hostPort(t, e["LORAFT_S3_ENDPOINT"])
		if strings.Contains(e["LORAFT_S3_ENDPOINT"], "http://") || e["LORAFT_S3_TLS"] == "false" {
			t.Errorf("%s: plain HTTP to the store", name)
		}
		if !slices.Contains(storeHosts, host) {
			t.Errorf("%s: LORAFT_S3_ENDPOINT host %s is not in MinIO's certificate %v", name, host, storeHosts)
		}
		if e["SSL_CERT_FILE"] != certDir+"/ca.pem" {
			t.Errorf("%s: SSL_CERT_FILE %q, want the loraft CA %s/ca.pem (it signed MinIO's certificate)", name, e["SSL_CERT_FILE"], certDir)
		}
	}
	ok := false
	for _, v := range composeVolumes(t, "minio", minio) {
		ok = ok || (v.target == dir && v.source == "pki" && v.subpath == "store-minio" && v.readOnly)
	}
	if !ok {
		t.Errorf("minio: --certs-dir %s is not the pki volume's store-minio, read-only", dir)
	}
	script := strList(t, "certs", svcs["certs"]["command"])[0]
	for _, want := range []string{"public.crt", "private.key", "CAs/"} {
		if !strings.Contains(script, want) {
			t.Errorf("the certs service does not lay out MinIO's %s", want)
		}
	}
}

// certsCommands returns the arguments of the certs service's `loraft certs init` and
// `loraft certs issue`.
func certsCommands(t *testing.T, s map[string]any) (init, issue []string) {
	t.Helper()
	if s == nil {
		t.Fatal("no certs service")
	}
	for _, w := range strList(t, "certs command", s["command"]) {
		for _, args := range loraftInScript(t, w) {
			if len(args) >= 2 && args[0] == "certs" && args[1] == "init" {
				init = args
			}
			if len(args) >= 2 && args[0] == "certs" && args[1] == "issue" {
				issue = args
			}
		}
	}
	return init, issue
}

func splitComma(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// secretMount returns the Secret mounted read-only at dir in a pod template's container.
func secretMount(t *testing.T, obj map[string]any, c map[string]any, dir string) string {
	t.Helper()
	for _, m := range list(c["volumeMounts"]) {
		m := mapping(m)
		if m["mountPath"] != dir {
			continue
		}
		if m["readOnly"] != true {
			t.Errorf("%s: %s is not mounted read-only", c["name"], dir)
		}
		for _, v := range list(dig(obj, "spec", "template", "spec", "volumes")) {
			if v := mapping(v); v["name"] == m["name"] {
				return str(dig(v, "secret", "secretName"))
			}
		}
	}
	t.Errorf("%s: no Secret mounted at %s", c["name"], dir)
	return ""
}

// TestK8sTLS: coordinators, trainers and the operator's toolbox run with certificates from
// their role's Secret, mounted read-only; MinIO serves HTTPS from the store's.
func TestK8sTLS(t *testing.T) {
	objs := k8sObjects(t, "k8s/base")
	// Coordinators: one certificate for the role, valid for every member's name.
	sts := findObject(t, objs, "StatefulSet", coordinatorSTS)
	c := container(t, sts, "coordinator")
	shellEnv := map[string]string{"POD_NAME": coordinatorSTS + "-0", "POD_IP": "10.0.0.1"}
	for k, e := range envOf(c) {
		if v, ok := e["value"].(string); ok {
			shellEnv[k] = v
		}
	}
	args, _ := coordinatorArgs(t, c, shellEnv)
	ca, cert, key := tlsFlagsOf(t, "coordinator", args)
	if want := []string{certDir + "/ca.pem", certDir + "/cert.pem", certDir + "/key.pem"}; !slices.Equal([]string{ca, cert, key}, want) {
		t.Errorf("coordinator TLS files %q, want %q", []string{ca, cert, key}, want)
	}
	if s := secretMount(t, sts, c, certDir); s != "loraft-tls-coordinator" {
		t.Errorf("coordinator certificates from Secret %q, want loraft-tls-coordinator", s)
	}
	probe := strList(t, "readinessProbe", dig(c, "readinessProbe", "exec", "command"))
	if pca, pcert, pkey := tlsFlagsOf(t, "coordinator readiness probe", probe[1:]); pca != ca || pcert != cert || pkey != key {
		t.Errorf("the readiness probe does not use the coordinator's certificate")
	}
	// Trainers: one Secret for the role holding a certificate per pod; each uses its own.
	tsts := findObject(t, objs, "StatefulSet", trainerSTS)
	tc := container(t, tsts, "trainer")
	pod := trainerSTS + "-0"
	targs, _ := trainerArgs(t, strList(t, "command", tc["command"]), nil, pod)
	ca, cert, key = tlsFlagsOf(t, "trainer", targs)
	if want := []string{certDir + "/ca.pem", certDir + "/" + pod + ".cert.pem", certDir + "/" + pod + ".key.pem"}; !slices.Equal([]string{ca, cert, key}, want) {
		t.Errorf("trainer TLS files %q, want %q (its own, by pod name)", []string{ca, cert, key}, want)
	}
	if s := secretMount(t, tsts, tc, certDir); s != "loraft-tls-trainer" {
		t.Errorf("trainer certificates from Secret %q, want loraft-tls-trainer", s)
	}
	// The operator's toolbox: LORAFT_TLS_* point into the operator's Secret.
	op := findObject(t, objs, "Deployment", "loraft-operator")
	oc := container(t, op, "operator")
	oenv := envOf(oc)
	for k, file := range map[string]string{"LORAFT_TLS_CA": "ca.pem", "LORAFT_TLS_CERT": "cert.pem", "LORAFT_TLS_KEY": "key.pem"} {
		if got := str(oenv[k]["value"]); got != certDir+"/"+file {
			t.Errorf("operator %s %q, want %s/%s", k, got, certDir, file)
		}
	}
	if s := secretMount(t, op, oc, certDir); s != "loraft-tls-operator" {
		t.Errorf("operator certificates from Secret %q, want loraft-tls-operator", s)
	}
	// Trainers and the operator reach MinIO over HTTPS, trusting the loraft CA.
	for who, env := range map[string]map[string]map[string]any{"trainer": envOf(tc), "operator": oenv} {
		if e := str(env["LORAFT_S3_ENDPOINT"]["value"]); strings.HasPrefix(e, "http://") || str(env["LORAFT_S3_TLS"]["value"]) == "false" {
			t.Errorf("%s: plain HTTP to the store (%s)", who, e)
		}
		if got := str(env["SSL_CERT_FILE"]["value"]); got != certDir+"/ca.pem" {
			t.Errorf("%s: SSL_CERT_FILE %q, want %s/ca.pem", who, got, certDir)
		}
	}
	minio := findObject(t, objs, "StatefulSet", "loraft-minio")
	mc := container(t, minio, "minio")
	dir := mustFlag(t, "minio", strList(t, "minio args", mc["args"]), "certs-dir")
	if s := secretMount(t, minio, mc, dir); s != "loraft-tls-store" {
		t.Errorf("MinIO's certificate from Secret %q, want loraft-tls-store", s)
	}
	for _, p := range []string{"readinessProbe", "livenessProbe"} {
		if dig(mc, p, "httpGet", "scheme") != "HTTPS" {
			t.Errorf("MinIO %s is not HTTPS", p)
		}
	}
}

// ---------------------------------------------------------------- NetworkPolicy

// TestNetworkPolicies: everything is closed by default; coordinators' API only from trainers
// and the operator's toolbox, raft only from coordinators, the all-reduce port only from
// trainers, MinIO only from trainers, the operator and the init Job. Ports are the containers'.
func TestNetworkPolicies(t *testing.T) {
	objs := k8sObjects(t, "k8s/base")
	component := func(sel map[string]any) string {
		if sel["app.kubernetes.io/name"] != "loraft" {
			return fmt.Sprintf("not loraft's (%v)", sel)
		}
		return str(sel["app.kubernetes.io/component"])
	}
	// Every component a policy names has pods of that label in the manifests.
	podsOf := map[string]bool{}
	for _, d := range objs {
		if labels := mapping(dig(d.v, "spec", "template", "metadata", "labels")); labels != nil {
			podsOf[component(labels)] = true
		}
	}
	deny := findObject(t, objs, "NetworkPolicy", "loraft-default-deny")
	if sel := mapping(dig(deny, "spec", "podSelector")); len(sel) != 0 || !slices.Contains(strList(t, "policyTypes", dig(deny, "spec", "policyTypes")), "Ingress") || dig(deny, "spec", "ingress") != nil {
		t.Errorf("loraft-default-deny must select every pod and allow no ingress: %v", deny["spec"])
	}
	port := func(kind, name, cname, pname string) int {
		return containerPort(t, container(t, findObject(t, objs, kind, name), cname), pname)
	}
	for _, tc := range []struct {
		policy, target string
		want           map[int][]string // port → components allowed to reach it
	}{
		{"loraft-coordinator", "coordinator", map[int][]string{
			port("StatefulSet", coordinatorSTS, "coordinator", "api"):  {"operator", "trainer"},
			port("StatefulSet", coordinatorSTS, "coordinator", "raft"): {"coordinator"},
		}},
		{"loraft-trainer", "trainer", map[int][]string{port("StatefulSet", trainerSTS, "trainer", "allreduce"): {"trainer"}}},
		{"loraft-minio", "minio", map[int][]string{port("StatefulSet", "loraft-minio", "minio", "s3"): {"minio-init", "operator", "trainer"}}},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			np := findObject(t, objs, "NetworkPolicy", tc.policy)
			if got := component(mapping(dig(np, "spec", "podSelector", "matchLabels"))); got != tc.target {
				t.Errorf("selects %q pods, want %s", got, tc.target)
			}
			if !slices.Contains(strList(t, "policyTypes", dig(np, "spec", "policyTypes")), "Ingress") {
				t.Errorf("policyTypes has no Ingress")
			}
			got := map[int][]string{}
			for _, r := range list(dig(np, "spec", "ingress")) {
				r := mapping(r)
				var from []string
				for _, f := range list(r["from"]) {
					f := mapping(f)
					if len(f) != 1 || f["podSelector"] == nil {
						t.Errorf("source %v: want only a podSelector (no namespace or IP block)", f)
						continue
					}
					c := component(mapping(dig(f, "podSelector", "matchLabels")))
					if !podsOf[c] {
						t.Errorf("source %q: no pods carry that component", c)
					}
					from = append(from, c)
				}
				if len(from) == 0 {
					t.Errorf("rule %v admits every source", r)
				}
				ports := list(r["ports"])
				if len(ports) == 0 {
					t.Errorf("rule %v admits every port", r)
				}
				for _, p := range ports {
					n, _ := mapping(p)["port"].(int)
					got[n] = append(got[n], from...)
				}
			}
			for p := range got {
				slices.Sort(got[p])
				got[p] = slices.Compact(got[p])
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("ingress %v, want %v", got, tc.want)
			}
		})
	}
}

// ---------------------------------------------------------------- S3: per-role users

type s3Policy struct {
	Version   string
	Statement []struct {
		Sid       string
		Effect    string
		Action    []string
		Resource  []string
		Condition map[string]any
	}
}

func loadPolicy(t *testing.T, file string) s3Policy {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p s3Policy
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return p
}

// allows evaluates an Allow-only policy: whether action on the ARN resource is granted.
func (p s3Policy) allows(action, resource string) bool {
	for _, st := range p.Statement {
		if st.Effect != "Allow" || !slices.Contains(st.Action, action) {
			continue
		}
		for _, r := range st.Resource {
			pat := "^" + strings.ReplaceAll(regexp.QuoteMeta(r), `\*`, ".*") + "$"
			if regexp.MustCompile(pat).MatchString(resource) {
				return true
			}
		}
	}
	return false
}

// s3Actions are the only actions the loraft users may hold: object reads and writes and
// finding their bucket. No wildcard, no bucket administration, no admin API.
var s3Actions = []string{"s3:GetBucketLocation", "s3:ListBucket", "s3:GetObject", "s3:PutObject",
	"s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"}

// TestS3Policies: the trainers' and operators' MinIO policies grant what each role does with
// the store's real key layout (checkpoint's key functions) under both deployments' prefixes,
// and nothing else.
func TestS3Policies(t *testing.T) {
	for _, f := range []string{"init.sh", "trainer-policy.json", "operator-policy.json"} {
		a, errA := os.ReadFile(path.Join("minio", f))
		b, errB := os.ReadFile(path.Join("k8s/base/minio", f))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("k8s/base/minio/%s is not a copy of minio/%s (%v, %v)", f, f, errA, errB)
		}
	}
	trainer, operator := loadPolicy(t, "minio/trainer-policy.json"), loadPolicy(t, "minio/operator-policy.json")
	for name, p := range map[string]s3Policy{"trainer": trainer, "operator": operator} {
		if p.Version != "2012-10-17" || len(p.Statement) == 0 {
			t.Errorf("%s policy: version %q, %d statements", name, p.Version, len(p.Statement))
		}
		for _, st := range p.Statement {
			if st.Effect != "Allow" {
				t.Errorf("%s policy %s: effect %q (Allow-only policies; a user has nothing else)", name, st.Sid, st.Effect)
			}
			for _, a := range st.Action {
				if !slices.Contains(s3Actions, a) {
					t.Errorf("%s policy %s grants %s", name, st.Sid, a)
				}
			}
			for _, r := range st.Resource {
				if r != "arn:aws:s3:::loraft" && !strings.HasPrefix(r, "arn:aws:s3:::loraft/") {
					t.Errorf("%s policy %s: resource %s outside the bucket loraft", name, st.Sid, r)
				}
			}
		}
	}
	// The stores' prefixes, as the manifests give them.
	var prefixes []string
	for _, spec := range []string{
		composeEnv(t, composeServices(t, "compose/compose.yaml")["trainer1"])["LORAFT_STORE"],
		str(envOf(container(t, findObject(t, k8sObjects(t, "k8s/base"), "StatefulSet", trainerSTS), "trainer"))["LORAFT_STORE"]["value"]),
	} {
		bucket, prefix, _ := strings.Cut(strings.TrimPrefix(spec, "s3://"), "/")
		if bucket != "loraft" || prefix == "" {
			t.Fatalf("store %q: want s3://loraft/<prefix> (the policies name the bucket loraft)", spec)
		}
		prefixes = append(prefixes, prefix)
	}
	dataset := checkpoint.DatasetKey(strings.Repeat("ab", 32))
	ckpt := checkpoint.Prefix("demo-t000", 42) + "adapter.safetensors"
	sweep := checkpoint.SweepKey("demo")
	for _, prefix := range prefixes {
		obj := func(key string) string { return "arn:aws:s3:::loraft/" + prefix + "/" + key }
		for _, tc := range []struct {
			who    string
			p      s3Policy
			action string
			key    string // "" for the bucket
			want   bool
		}{
			{"trainer", trainer, "s3:ListBucket", "", true},
			{"trainer", trainer, "s3:GetObject", dataset, true},
			{"trainer", trainer, "s3:PutObject", dataset, false},
			{"trainer", trainer, "s3:DeleteObject", dataset, false},
			{"trainer", trainer, "s3:GetObject", ckpt, true},
			{"trainer", trainer, "s3:PutObject", ckpt, true},
			{"trainer", trainer, "s3:DeleteObject", ckpt, true}, // checkpoint retention
			{"trainer", trainer, "s3:GetObject", sweep, false},
			{"trainer", trainer, "s3:PutObject", sweep, false},
			{"operator", operator, "s3:ListBucket", "", true},
			{"operator", operator, "s3:PutObject", dataset, true},
			{"operator", operator, "s3:PutObject", sweep, true},
			{"operator", operator, "s3:GetObject", sweep, true},
			{"operator", operator, "s3:GetObject", ckpt, true},
			{"operator", operator, "s3:PutObject", ckpt, false}, // checkpoints are the trainers'
		} {
			res := "arn:aws:s3:::loraft"
			if tc.key != "" {
				res = obj(tc.key)
			}
			if got := tc.p.allows(tc.action, res); got != tc.want {
				t.Errorf("%s policy: %s on %s = %v, want %v", tc.who, tc.action, res, got, tc.want)
			}
		}
	}
	// The init script hands secret keys to mc on stdin only (printf is a shell builtin).
	data, err := os.ReadFile("minio/init.sh")
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, "printf ") {
			continue
		}
		if regexp.MustCompile(`\$\{?[A-Z_]*(SECRET|PASSWORD)`).MatchString(line) {
			t.Errorf("minio/init.sh:%d passes a secret as an argument: %s", i+1, trimmed)
		}
	}
	for _, want := range []string{"mc admin user add local", "mc admin policy create local loraft-trainer", "mc admin policy attach local"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("minio/init.sh does not run %q", want)
		}
	}
}

// TestS3CredentialsPerRole: MinIO's root user reaches only MinIO and its init; trainers and the
// operator have their own users, which the init creates; coordinators have none.
func TestS3CredentialsPerRole(t *testing.T) {
	t.Run("compose", func(t *testing.T) {
		svcs := composeServices(t, "compose/compose.yaml")
		for name, s := range svcs {
			env := composeEnv(t, s)
			for k, v := range env {
				if strings.Contains(v, "MINIO_ROOT_") && name != "minio" && name != "minio-init" {
					t.Errorf("%s: %s uses MinIO's root credentials", name, k)
				}
			}
			args := strList(t, name, s["command"])
			want := ""
			switch {
			case name == "cli":
				want = "LORAFT_OPERATOR_S3_"
			case len(args) > 0 && args[0] == "trainer":
				want = "LORAFT_TRAINER_S3_"
			case len(args) > 0 && args[0] == "coordinator":
				if env["AWS_ACCESS_KEY_ID"] != "" || env["AWS_SECRET_ACCESS_KEY"] != "" {
					t.Errorf("%s: a coordinator holds S3 credentials (it never touches the store)", name)
				}
				continue
			default:
				continue
			}
			for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
				if !strings.HasPrefix(env[k], "${"+want) {
					t.Errorf("%s: %s = %q, want ${%s…}", name, k, env[k], want)
				}
			}
		}
		init := composeEnv(t, svcs["minio-init"])
		for k, want := range map[string]string{"TRAINER_S3_USER": "${LORAFT_TRAINER_S3_ACCESS_KEY", "TRAINER_S3_SECRET_KEY": "${LORAFT_TRAINER_S3_SECRET_KEY",
			"OPERATOR_S3_USER": "${LORAFT_OPERATOR_S3_ACCESS_KEY", "OPERATOR_S3_SECRET_KEY": "${LORAFT_OPERATOR_S3_SECRET_KEY"} {
			if !strings.HasPrefix(init[k], want) {
				t.Errorf("minio-init: %s = %q, want %s…}", k, init[k], want)
			}
		}
		if !slices.ContainsFunc(composeVolumes(t, "minio-init", svcs["minio-init"]), func(v composeVolume) bool {
			return v.source == "../minio" && v.target == init["POLICIES"] && v.readOnly
		}) {
			t.Errorf("minio-init does not mount ../minio read-only at $POLICIES (%s)", init["POLICIES"])
		}
		data, err := os.ReadFile("compose/.env.example")
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"LORAFT_TRAINER_S3_ACCESS_KEY", "LORAFT_TRAINER_S3_SECRET_KEY", "LORAFT_OPERATOR_S3_ACCESS_KEY", "LORAFT_OPERATOR_S3_SECRET_KEY"} {
			m := regexp.MustCompile(`(?m)^` + k + `=(.*)$`).FindStringSubmatch(string(data))
			if m == nil || !placeholder.MatchString(m[1]) {
				t.Errorf(".env.example: %s is missing or not a CHANGE-ME placeholder", k)
			}
		}
	})
	t.Run("kubernetes", func(t *testing.T) {
		objs := k8sObjects(t, "k8s/base")
		secretOf := func(c map[string]any, name string) string {
			return str(dig(envOf(c)[name], "valueFrom", "secretKeyRef", "name"))
		}
		for _, d := range objs {
			for _, c := range containers(d.v) {
				for name := range envOf(c) {
					if s := secretOf(c, name); s == "loraft-s3" && d.v["kind"] != "Job" && dig(d.v, "metadata", "name") != "loraft-minio" {
						t.Errorf("%s: %s from MinIO's root Secret loraft-s3", d, name)
					}
				}
			}
		}
		for _, tc := range []struct {
			kind, name, container, secret string
		}{
			{"StatefulSet", trainerSTS, "trainer", "loraft-s3-trainer"},
			{"Deployment", "loraft-operator", "operator", "loraft-s3-operator"},
			{"StatefulSet", coordinatorSTS, "coordinator", ""},
		} {
			c := container(t, findObject(t, objs, tc.kind, tc.name), tc.container)
			for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
				if got := secretOf(c, k); got != tc.secret || (tc.secret == "" && envOf(c)[k] != nil) {
					t.Errorf("%s: %s from Secret %q, want %q", tc.name, k, got, tc.secret)
				}
			}
		}
		job := container(t, findObject(t, objs, "Job", "loraft-minio-init"), "minio-init")
		for k, want := range map[string]string{"MINIO_ROOT_USER": "loraft-s3", "MINIO_ROOT_PASSWORD": "loraft-s3",
			"TRAINER_S3_USER": "loraft-s3-trainer", "TRAINER_S3_SECRET_KEY": "loraft-s3-trainer",
			"OPERATOR_S3_USER": "loraft-s3-operator", "OPERATOR_S3_SECRET_KEY": "loraft-s3-operator"} {
			if got := secretOf(job, k); got != want {
				t.Errorf("loraft-minio-init: %s from Secret %q, want %q", k, got, want)
			}
		}
		// Every Secret a pod reads for S3 has an example with those keys.
		examples := map[string]map[string]any{}
		for _, d := range loadYAML(t, "k8s/base/secret.example.yaml") {
			examples[str(dig(d.v, "metadata", "name"))] = mapping(d.v["stringData"])
		}
		for _, d := range objs {
			for _, c := range containers(d.v) {
				for _, e := range envOf(c) {
					ref := mapping(dig(e, "valueFrom", "secretKeyRef"))
					if ref == nil {
						continue
					}
					if _, ok := examples[str(ref["name"])][str(ref["key"])]; !ok {
						t.Errorf("%s: Secret %v key %v has no entry in secret.example.yaml", d, ref["name"], ref["key"])
					}
				}
			}
		}
		// The Job's configMap is generated from the script and the policies.
		k := loadYAML(t, "k8s/base/kustomization.yaml")[0].v
		var files []string
		for _, g := range list(k["configMapGenerator"]) {
			if mapping(g)["name"] == "loraft-minio-init" {
				files = strList(t, "configMapGenerator files", mapping(g)["files"])
			}
		}
		slices.Sort(files)
		if want := []string{"minio/init.sh", "minio/operator-policy.json", "minio/trainer-policy.json"}; !slices.Equal(files, want) {
			t.Errorf("configMapGenerator loraft-minio-init files %v, want %v", files, want)
		}
	})
}
