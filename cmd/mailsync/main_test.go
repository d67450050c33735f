package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
)

// output is a writer that tests can wait on.
type output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newOutput() *output { return &output{changed: make(chan struct{})} }

func (o *output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n, err := o.buf.Write(b)
	close(o.changed)
	o.changed = make(chan struct{})
	return n, err
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// waitFor blocks until re matches the output, and returns the submatches.
// When done is closed, the program exited first: the test fails showing
// stderr.
func (o *output) waitFor(t *testing.T, re *regexp.Regexp, done <-chan struct{}, stderr *output) []string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		o.mu.Lock()
		m := re.FindStringSubmatch(o.buf.String())
		ch := o.changed
		o.mu.Unlock()
		if m != nil {
			return m
		}
		select {
		case <-ch:
		case <-done:
			t.Fatalf("mailsync exited before printing %s; output:\n%s\nstderr:\n%s", re, o, stderr)
		case <-timeout:
			t.Fatalf("mailsync did not print %s within 30 s; output:\n%s", re, o.String())
		}
	}
}

var (
	listenRE = regexp.MustCompile(`listening on (http://\S+)`)
	tokenRE  = regexp.MustCompile(`shown only now:\n\s*(mst_\S+)`)
)

type instance struct {
	url    string
	stdout *output
	stderr *output
	stop   func() int
}

// startServe runs "mailsync serve" in-process with the given environment.
func startServe(t *testing.T, vars map[string]string) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr := newOutput(), newOutput()
	getenv := func(k string) string { return vars[k] }
	done := make(chan struct{})
	code := 0
	go func() {
		defer close(done)
		code = run(ctx, []string{"serve", "-listen", "127.0.0.1:0", "-submission-listen", "off"}, strings.NewReader(""), stdout, stderr, getenv)
	}()
	m := stdout.waitFor(t, listenRE, done, stderr)
	stop := func() int {
		cancel()
		<-done
		return code
	}
	t.Cleanup(func() { stop() })
	return &instance{url: m[1], stdout: stdout, stderr: stderr, stop: stop}
}

func get(t *testing.T, url, token string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var v map[string]any
	_ = json.Unmarshal(body, &v)
	if v == nil {
		v = map[string]any{"raw": string(body)}
	}
	return resp.StatusCode, v
}

func TestServeFirstStartRestartAndWrongKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	vars := map[string]string{"MAILSYNC_DATA_DIR": dir}

	first := startServe(t, vars)
	m := first.stdout.waitFor(t, tokenRE, nil, nil)
	token := m[1]
	if !strings.Contains(first.stdout.String(), dir) {
		t.Errorf("first start does not print the data directory %s:\n%s", dir, first.stdout)
	}
	st, err := os.Stat(filepath.Join(dir, "secret.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secret.key: %v, mode %v; want a 0600 file", err, st.Mode().Perm())
	}

	code, me := get(t, first.url+"/api/v1/me", token)
	if code != 200 || me["email"] != "admin@localhost" || me["admin"] != true {
		t.Errorf("GET /api/v1/me = %d %v, want 200 and the admin", code, me)
	}
	code, body := get(t, first.url+"/api/v1/me", "")
	errObj, _ := body["error"].(map[string]any)
	if code != 401 || errObj["code"] != "unauthenticated" || errObj["message"] == "" {
		t.Errorf("GET /api/v1/me without a token = %d %v, want 401 with the error shape", code, body)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, first.url+p, ""); code != 200 {
			t.Errorf("GET %s = %d %v, want 200", p, code, body)
		}
	}
	_, metrics := get(t, first.url+"/metrics", "")
	if raw, _ := metrics["raw"].(string); !strings.Contains(raw, `mailsync_http_requests_total{code="200",route="GET /api/v1/me"} 1`) ||
		!strings.Contains(raw, `mailsync_http_request_duration_seconds_bucket{route="GET /api/v1/me"`) {
		t.Errorf("metrics lack per-route counts and latency:\n%.2000s", raw)
	}
	if code := first.stop(); code != 0 {
		t.Fatalf("serve exited %d after cancel; stderr:\n%s", code, first.stderr)
	}
	if strings.Contains(first.stderr.String(), token) {
		t.Errorf("the log shows the admin token")
	}

	// A restart keeps the data and prints no new token.
	second := startServe(t, vars)
	if code, _ := get(t, second.url+"/api/v1/me", token); code != 200 {
		t.Errorf("after restart the first token gets %d, want 200", code)
	}
	if tokenRE.MatchString(second.stdout.String()) {
		t.Errorf("restart printed a new admin token:\n%s", second.stdout)
	}
	second.stop()

	// A wrong key stops serve with a message naming the key.
	otherKey, _ := secret.GenerateKey()
	stderr := newOutput()
	wrong := map[string]string{"MAILSYNC_DATA_DIR": dir, "MAILSYNC_SECRET_KEY": otherKey}
	code = run(context.Background(), []string{"serve", "-listen", "127.0.0.1:0", "-submission-listen", "off"}, nil, io.Discard, stderr, func(k string) string { return wrong[k] })
	if code == 0 || !strings.Contains(stderr.String(), "MAILSYNC_SECRET_KEY") {
		t.Errorf("serve with a wrong key = exit %d, stderr %q; want non-zero naming MAILSYNC_SECRET_KEY", code, stderr)
	}
	// A missing key file with a sealed database is refused too, and nothing
	// is generated in its place.
	if err := os.Rename(filepath.Join(dir, "secret.key"), filepath.Join(dir, "moved.key")); err != nil {
		t.Fatal(err)
	}
	stderr = newOutput()
	code = run(context.Background(), []string{"serve", "-listen", "127.0.0.1:0", "-submission-listen", "off"}, nil, io.Discard, stderr, func(k string) string { return vars[k] })
	if code == 0 || !strings.Contains(stderr.String(), "secret.key") {
		t.Errorf("serve without its key file = exit %d, stderr %q; want non-zero naming secret.key", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "secret.key")); err == nil {
		t.Errorf("serve generated a new key over a sealed database")
	}
}

func TestUserCommands(t *testing.T) {
	dir := t.TempDir()
	vars := map[string]string{"MAILSYNC_DATA_DIR": dir}
	getenv := func(k string) string { return vars[k] }
	runCmd := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(context.Background(), args, nil, &out, &errOut, getenv)
		return code, out.String(), errOut.String()
	}
	code, out, errOut := runCmd("user", "add", "--email", "ann@example.com", "--name", "Ann", "--admin")
	if code != 0 || !regexp.MustCompile(`(?m)^mst_\S+$`).MatchString(out) {
		t.Fatalf("user add = %d %q %q", code, out, errOut)
	}
	if code, _, errOut := runCmd("user", "add", "--email", "ANN@example.com", "--name", "Ann again"); code == 0 || !strings.Contains(errOut, "exists") {
		t.Errorf("adding the same address in other case = %d %q, want a refusal", code, errOut)
	}
	if code, _, errOut := runCmd("user", "add", "--email", "not an address"); code == 0 || !strings.Contains(errOut, "email") {
		t.Errorf("user add with a bad address = %d %q, want an error naming the email", code, errOut)
	}
	code, out2, _ := runCmd("user", "token", "--email", "ann@example.com")
	if code != 0 || !strings.Contains(out2, "mst_") || out2 == out {
		t.Errorf("user token = %d %q", code, out2)
	}
	if code, _, errOut := runCmd("user", "token", "--email", "bob@example.com"); code == 0 || !strings.Contains(errOut, "not found") {
		t.Errorf("user token for an unknown user = %d %q", code, errOut)
	}
	code, list, _ := runCmd("user", "list")
	if code != 0 || !strings.Contains(list, "ann@example.com") || !strings.Contains(list, "true") {
		t.Errorf("user list = %d %q", code, list)
	}
	if code, _, _ := runCmd("user"); code != 2 {
		t.Errorf("user without a subcommand = %d, want 2", code)
	}
	if code, _, _ := runCmd("bogus"); code != 2 {
		t.Errorf("unknown command = %d, want 2", code)
	}
}

func TestServeHelpListsEverySetting(t *testing.T) {
	var errOut bytes.Buffer
	code := run(context.Background(), []string{"serve", "--help"}, nil, io.Discard, &errOut, func(string) string { return "" })
	if code != 0 {
		t.Fatalf("serve --help = %d", code)
	}
	var cfg Config
	for _, s := range serveSettings(&cfg) {
		if !strings.Contains(errOut.String(), s.env) || !strings.Contains(errOut.String(), s.def) {
			t.Errorf("serve --help lacks %s with its default %q:\n%s", s.env, s.def, errOut.String())
		}
	}
}

func TestRotateKeyEmbedded(t *testing.T) {
	dir := t.TempDir()
	vars := map[string]string{"MAILSYNC_DATA_DIR": dir}
	inst := startServe(t, vars)
	token := inst.stdout.waitFor(t, tokenRE, nil, nil)[1]
	inst.stop()

	newKeyFile := filepath.Join(t.TempDir(), "new.key")
	if err := secret.WriteKeyFile(newKeyFile); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"rotate-key", "--new-key-file", newKeyFile}, nil, &out, &errOut, func(k string) string { return vars[k] })
	if code != 0 {
		t.Fatalf("rotate-key = %d %s", code, errOut.String())
	}
	newKey, _ := secret.LoadKeyFile(newKeyFile)
	inUse, _ := secret.LoadKeyFile(filepath.Join(dir, "secret.key"))
	if inUse.ID() != newKey.ID() {
		t.Fatalf("data/secret.key holds key %s after rotation, want %s", inUse.ID(), newKey.ID())
	}
	// Remove the old key: the service still starts and serves.
	olds, _ := filepath.Glob(filepath.Join(dir, "secret.key.old-*"))
	if len(olds) != 1 {
		t.Fatalf("old key kept as %v, want one file", olds)
	}
	os.Remove(olds[0])
	again := startServe(t, vars)
	if code, _ := get(t, again.url+"/api/v1/me", token); code != 200 {
		t.Errorf("after rotation and removing the old key: /api/v1/me = %d", code)
	}
}

// TestMain removes the binary that binary(t) built, once every test is done.
func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds the mailsync command once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mailsync-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "mailsync")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Two serve processes started at once on one empty PostgreSQL database both
// come up, and each migration runs once.
func TestTwoServeProcessesOnOnePostgres(t *testing.T) {
	dsn := storetest.DSN(t, store.Postgres)
	bin := binary(t)
	key, _ := secret.GenerateKey()
	type proc struct {
		cmd    *exec.Cmd
		stdout *output
		stderr *output
		done   chan struct{}
	}
	procs := make([]*proc, 2)
	for i := range procs {
		p := &proc{stdout: newOutput(), stderr: newOutput(), done: make(chan struct{})}
		p.cmd = exec.Command(bin, "serve", "-listen", "127.0.0.1:0", "-submission-listen", "off")
		p.cmd.Env = append(os.Environ(), "MAILSYNC_DB="+dsn, "MAILSYNC_SECRET_KEY="+key,
			"MAILSYNC_DATA_DIR="+t.TempDir(), "MAILSYNC_LOG_LEVEL=info")
		p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
		procs[i] = p
	}
	for _, p := range procs {
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done })
		go func() { p.cmd.Wait(); close(p.done) }()
	}
	applied, tokens := 0, 0
	for i, p := range procs {
		url := p.stdout.waitFor(t, listenRE, p.done, p.stderr)[1]
		if code, _ := get(t, url+"/readyz", ""); code != 200 {
			t.Errorf("instance %d /readyz = %d", i, code)
		}
		applied += strings.Count(p.stderr.String(), "applied migration")
		tokens += len(tokenRE.FindAllString(p.stdout.String(), -1))
	}
	if applied != len(store.Versions()) {
		t.Errorf("the two instances applied %d migrations in all, want %d (each once)", applied, len(store.Versions()))
	}
	if tokens != 1 {
		t.Errorf("the two instances printed %d admin tokens, want exactly 1", tokens)
	}
}
