package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/jackc/pgx/v5"

	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
)

// The canary sweep: "mailsync serve" at debug log level is handed a canary
// password (a system SMTP account, a mailbox's IMAP login and its outgoing
// SMTP, an own-SMTP CRM sender), a wrong canary password (a failing SMTP
// check and a failing IMAP connect) and a canary API token (every API call,
// the web sign-in form, AUTH PLAIN and AUTH LOGIN on the submission port);
// it sends and syncs mail with them. Then every byte it produced that a
// reader could get at is searched for each secret in every encoding
// testpeer.SecretForms knows: what serve wrote to stdout and stderr, every
// HTTP response (headers and body) the test received, /metrics, the SQLite
// files (database, WAL and shared memory, while serving and after the
// shutdown) or every PostgreSQL row as text. The expected count is 0, and
// serve must not have panicked.

const (
	canaryWrongPassword = "Canary+Wrong/5b2d=Pa55&word"
	canarySite          = "site@example.com"
	canaryBox           = "box@example.test"
	canaryCRM           = "crm@example.com"
	canaryUser          = "canary@example.com"
	canaryInbox         = 3 // messages delivered to the mailbox before it is connected
)

func TestCanarySweep(t *testing.T) {
	bin := binary(t)
	for _, d := range storetest.Dialects {
		t.Run(string(d), func(t *testing.T) { canarySweep(t, bin, d) })
	}
}

// sweep collects what serve produced, by source.
type sweep struct {
	mu      sync.Mutex
	sources []string
	data    map[string][]byte
}

func (s *sweep) add(source string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.data == nil {
		s.data = map[string][]byte{}
	}
	if _, ok := s.data[source]; !ok {
		s.sources = append(s.sources, source)
	}
	s.data[source] = append(s.data[source], b...)
}

// recordingTransport keeps every response, status line, headers and body,
// and, apart, every request the test sent (the control: the secrets are
// there, and the search must find them).
type recordingTransport struct {
	sw       *sweep
	requests *sweep
	base     http.RoundTripper
	mu       sync.Mutex
	count    int
}

func (rt *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var sent bytes.Buffer
	fmt.Fprintf(&sent, "%s %s\n", req.Method, req.URL)
	_ = req.Header.Write(&sent)
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		sent.Write(b)
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	rt.requests.add("HTTP requests", sent.Bytes())
	resp, err := rt.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s\n", resp.Proto, resp.Status)
	_ = resp.Header.Write(&b)
	b.Write(body)
	rt.sw.add("HTTP responses", b.Bytes())
	rt.mu.Lock()
	rt.count++
	rt.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, err
}

func canarySweep(t *testing.T, bin string, d store.Dialect) {
	ca := testpeer.NewCA(t)
	dv := testpeer.StartDovecot(t, &testpeer.DovecotOptions{CA: ca})
	password := testpeer.CanaryPassword
	dv.AddUser(t, canaryBox, password)
	for i := range canaryInbox {
		dv.Deliver(t, canaryBox, "INBOX", syncMessage(i, 600))
	}
	peer := testpeer.StartSMTP(t, &testpeer.SMTPOptions{
		Mode: testpeer.SMTPStartTLS, TLS: ca.ServerTLS(t),
		Users: map[string]string{canarySite: password, canaryBox: password, canaryCRM: password},
	})

	dataDir := t.TempDir()
	vars := map[string]string{
		"MAILSYNC_DATA_DIR":          dataDir,
		"MAILSYNC_LOG_LEVEL":         "debug",
		"MAILSYNC_ALLOW_HOSTS":       "127.0.0.0/8",
		"MAILSYNC_EXTRA_CA_FILE":     ca.WriteFile(t),
		"MAILSYNC_SUBMISSION_LISTEN": "127.0.0.1:0",
		"MAILSYNC_POLL_INTERVAL":     "1h",
	}
	cert := ca.Issue(t, testpeer.CertOptions{})
	certDir := t.TempDir()
	vars["MAILSYNC_SUBMISSION_TLS_CERT"] = filepath.Join(certDir, "cert.pem")
	vars["MAILSYNC_SUBMISSION_TLS_KEY"] = filepath.Join(certDir, "key.pem")
	for path, b := range map[string][]byte{vars["MAILSYNC_SUBMISSION_TLS_CERT"]: cert.CertPEM, vars["MAILSYNC_SUBMISSION_TLS_KEY"]: cert.KeyPEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var dsn string
	if d == store.Postgres {
		dsn = storetest.DSN(t, store.Postgres) // skips without a server
		key, err := secret.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		vars["MAILSYNC_DB"], vars["MAILSYNC_SECRET_KEY"] = dsn, key
		// JSON logs here, text on SQLite: both renderings are searched.
		vars["MAILSYNC_LOG_FORMAT"] = "json"
	}

	// serve, as a child process.
	stdout, stderr, done := newOutput(), newOutput(), make(chan struct{})
	cmd := exec.Command(bin, "serve", "-listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), envList(vars)...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
	})
	base := stdout.waitFor(t, listenRE, done, stderr)[1]
	subm := submissionRE.FindStringSubmatch(stdout.String())
	if subm == nil {
		t.Fatalf("serve printed no submission address:\n%s", stdout)
	}
	stdout.waitFor(t, tokenRE, done, stderr)

	var out bytes.Buffer
	if c := run(context.Background(), []string{"user", "add", "--email", canaryUser, "--name", "Canary", "--admin"},
		nil, &out, io.Discard, func(k string) string { return vars[k] }); c != 0 {
		t.Fatalf("user add = %d", c)
	}
	token := regexp.MustCompile(`mst_\S+`).FindString(out.String())
	if token == "" {
		t.Fatalf("user add printed no token: %q", out.String())
	}

	sw := &sweep{}
	rt := &recordingTransport{sw: sw, requests: &sweep{}, base: http.DefaultTransport}
	api := &apiClient{url: base, token: token, client: &http.Client{Timeout: 60 * time.Second, Transport: rt}}
	// want("what", 200)(api.call(…)) fails unless the status is one of ok.
	want := func(what string, ok ...int) func(int, map[string]any) map[string]any {
		return func(code int, body map[string]any) map[string]any {
			t.Helper()
			if !slices.Contains(ok, code) {
				t.Fatalf("%s = %d %v, want %v; serve's log:\n%.20000s", what, code, body, ok, stderr)
			}
			return body
		}
	}
	smtpBlock := func(login, pw string) map[string]any {
		return map[string]any{"host": "localhost", "port": peer.Port(), "security": "starttls", "auth": "login", "login": login, "password": pw}
	}

	// A system account: a failing check with the wrong password, then the
	// account itself (checked on save).
	account := smtpBlock(canarySite, canaryWrongPassword)
	account["email"] = canarySite
	body := want("check with the wrong password", 200)(api.call(t, "POST", "/api/v1/smtp-accounts/check", account))
	if body["ok"] != false {
		t.Errorf("the check with the wrong password passed: %v", body)
	}
	account["password"] = password
	want("create the system account", http.StatusCreated)(api.call(t, "POST", "/api/v1/smtp-accounts", account))

	// A mailbox on Dovecot: a wrong password first, then the right one,
	// then its outgoing block with a copy saved in Sent.
	imapIn := map[string]any{"host": "localhost", "port": dv.TLSPort(), "security": "ssl", "login": canaryBox}
	want("connect with the wrong password", 422, 400)(api.call(t, "POST", "/api/v1/mailboxes",
		map[string]any{"email": canaryBox, "password": canaryWrongPassword, "imap": imapIn}))
	body = want("connect the mailbox", http.StatusCreated)(api.call(t, "POST", "/api/v1/mailboxes",
		map[string]any{"email": canaryBox, "password": password, "imap": imapIn}))
	mbID := int64(body["mailbox"].(map[string]any)["id"].(float64))
	mbPath := fmt.Sprintf("/api/v1/mailboxes/%d", mbID)
	want("outgoing block", 200)(api.call(t, "PUT", mbPath+"/outgoing",
		map[string]any{"enabled": true, "save_copy": true, "smtp": smtpBlock(canaryBox, password)}))
	want("outgoing check", 200)(api.call(t, "POST", mbPath+"/outgoing/check", map[string]any{"smtp": smtpBlock(canaryBox, password)}))
	want("mailbox settings", 200)(api.call(t, "GET", mbPath+"/settings", nil))

	// An own-SMTP CRM sender.
	body = want("CRM sender", http.StatusCreated)(api.call(t, "POST", "/api/v1/senders",
		map[string]any{"kind": "smtp", "email": canaryCRM, "name": "CRM", "smtp": smtpBlock(canaryCRM, password)}))
	senderID := body["sender"].(map[string]any)["id"].(string)

	// Mail through each of them.
	var outbox []string
	for _, msg := range []map[string]any{
		{"from": canarySite, "to": []string{"r1@example.org"}, "subject": "system account", "text": "one"},
		{"from": canaryBox, "to": []string{"r2@example.org"}, "subject": "mailbox", "text": "two"},
		{"sender_id": senderID, "to": []string{"r3@example.org"}, "subject": "CRM", "text": "three",
			"crm": map[string]any{"entity_type": "deal", "entity_id": "42"}},
	} {
		body = want("send "+msg["subject"].(string), http.StatusAccepted)(api.call(t, "POST", "/api/v1/outbox", msg))
		outbox = append(outbox, fmt.Sprintf("/api/v1/outbox/%d", int64(body["id"].(float64))))
	}
	// The submission port, AUTH PLAIN and AUTH LOGIN with the token.
	for _, auth := range []sasl.Client{sasl.NewPlainClient("", canaryUser, token), sasl.NewLoginClient(canaryUser, token)} {
		c, err := smtp.DialStartTLS(subm[1], ca.ClientTLS("localhost"))
		if err != nil {
			t.Fatalf("submission STARTTLS: %v", err)
		}
		if err := c.Auth(auth); err != nil {
			t.Fatalf("submission AUTH: %v", err)
		}
		msg := "From: " + canarySite + "\r\nTo: r4@example.org\r\nSubject: submission\r\n\r\nfour\r\n"
		if err := c.SendMail(canarySite, []string{"r4@example.org"}, strings.NewReader(msg)); err != nil {
			t.Fatalf("submission: %v", err)
		}
		_ = c.Quit()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := peer.WaitMessages(ctx, 5); err != nil {
		t.Fatalf("%v; serve's log:\n%s", err, stderr)
	}
	boundedPoll(t, 60*time.Second, "the INBOX synced", func() bool {
		_, synced := api.inbox(t, mbID)
		return synced == canaryInbox
	})
	want("sync now", http.StatusAccepted)(api.call(t, "POST", mbPath+"/sync", nil))

	// Everything an API client may read back.
	body = want("messages", 200)(api.call(t, "GET", mbPath+"/messages", nil))
	if msgs, _ := body["messages"].([]any); len(msgs) > 0 {
		if id, ok := msgs[0].(map[string]any)["id"].(float64); ok {
			want("a message", 200)(api.call(t, "GET", fmt.Sprintf("%s/messages/%d", mbPath, int64(id)), nil))
		}
	}
	for _, p := range append(outbox, "/api/v1/me", "/api/v1/smtp-accounts", "/api/v1/mailboxes", mbPath, mbPath+"/folders",
		"/api/v1/senders", "/api/v1/send-log") {
		want("GET "+p, 200)(api.call(t, "GET", p, nil))
	}

	// The pages: sign in with the token through the form, then read them.
	jar, _ := cookiejar.New(nil)
	web := &http.Client{Timeout: 60 * time.Second, Transport: rt, Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	page := func(method, path string, form url.Values) (int, string) {
		t.Helper()
		var rd io.Reader
		if form != nil {
			rd = strings.NewReader(form.Encode())
		}
		req, _ := http.NewRequest(method, base+path, rd)
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := web.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	_, signin := page("GET", "/signin", nil)
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(signin)
	if csrf == nil {
		t.Fatalf("no CSRF token on the sign-in page")
	}
	if code, b := page("POST", "/signin", url.Values{"csrf": {csrf[1]}, "token": {token}}); code != http.StatusSeeOther {
		t.Fatalf("sign in = %d %.500s", code, b)
	}
	for _, p := range []string{"/accounts", "/mailboxes", fmt.Sprintf("/mailboxes/%d", mbID),
		fmt.Sprintf("/mailboxes/%d/messages", mbID), "/senders", "/log", "/compose", "/users"} {
		if code, b := page("GET", p, nil); code != 200 {
			t.Errorf("GET %s = %d %.300s", p, code, b)
		}
	}
	code, metrics := page("GET", "/metrics", nil)
	if code != 200 {
		t.Fatalf("GET /metrics = %d", code)
	}
	sw.add("GET /metrics", []byte(metrics))

	dbFiles := func(when string) {
		if d != store.SQLite {
			return
		}
		for _, suffix := range []string{"", "-wal", "-shm"} {
			b, err := os.ReadFile(filepath.Join(dataDir, "mailsync.db"+suffix))
			if err == nil {
				sw.add(fmt.Sprintf("mailsync.db%s %s", suffix, when), b)
			}
		}
	}
	dbFiles("while serving")

	// An orderly shutdown, which must end well.
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("serve did not stop within 60 s of SIGINT")
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("serve exited %d after SIGINT; stderr:\n%s", code, stderr)
	}
	dbFiles("after shutdown")
	if d == store.Postgres {
		sw.add("PostgreSQL rows", dumpPostgres(t, dsn))
	}
	sw.add("serve stdout", []byte(stdout.String()))
	sw.add("serve stderr", []byte(stderr.String()))

	for _, src := range []string{"serve stdout", "serve stderr"} {
		if b := sw.data[src]; bytes.Contains(b, []byte("panic:")) || bytes.Contains(b, []byte("goroutine ")) {
			t.Errorf("%s shows a panic:\n%s", src, b)
		}
	}
	if !strings.Contains(stderr.String(), "level=DEBUG") && !strings.Contains(stderr.String(), `"level":"DEBUG"`) {
		t.Errorf("serve logged nothing at debug level: the sweep did not run at debug")
	}

	secrets := []struct {
		name, value string
		logins      []string
	}{
		{"password", password, []string{canarySite, canaryBox, canaryCRM}},
		{"wrong password", canaryWrongPassword, []string{canarySite, canaryBox}},
		{"API token", token, []string{canaryUser}},
	}
	count := func(sw *sweep, report bool) (found map[string]int, total int) {
		found = map[string]int{}
		for _, src := range sw.sources {
			b := sw.data[src]
			total += len(b)
			for _, s := range secrets {
				forms := map[string]bool{}
				for _, login := range s.logins {
					for _, f := range testpeer.FindSecret(b, login, s.value) {
						forms[f] = true
					}
				}
				for f := range forms {
					found[s.name]++
					if report {
						t.Errorf("%s shows the canary %s (%s)", src, s.name, f)
					}
				}
			}
		}
		return found, total
	}
	// The control: the requests carried the password, the wrong password
	// and the token, so the search finds each of them there.
	if sent, _ := count(rt.requests, false); sent["password"] == 0 || sent["wrong password"] == 0 || sent["API token"] == 0 {
		t.Errorf("the search found %v in the requests that carried every secret: it is blind", sent)
	}
	foundBy, total := count(sw, true)
	found := 0
	for _, n := range foundBy {
		found += n
	}
	var sizes []string
	for _, src := range sw.sources {
		sizes = append(sizes, fmt.Sprintf("%s %d", src, len(sw.data[src])))
	}
	t.Logf("canary sweep (%s): %d appearances of %d secrets in %d bytes across %d sources (%d HTTP responses): %s",
		d, found, len(secrets), total, len(sw.sources), rt.count, strings.Join(sizes, "; "))
}

// dumpPostgres returns every row of every table of the database as text,
// bytea columns as hex.
func dumpPostgres(t *testing.T, dsn string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to dump: %v", err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for _, tbl := range tables {
		rows, err := conn.Query(ctx, "SELECT t::text FROM "+pgx.Identifier{tbl}.Sanitize()+" t")
		if err != nil {
			t.Fatalf("dump %s: %v", tbl, err)
		}
		texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("dump %s: %v", tbl, err)
		}
		fmt.Fprintf(&out, "-- %s: %d rows\n", tbl, len(texts))
		for _, s := range texts {
			out.WriteString(s)
			out.WriteByte('\n')
		}
	}
	if len(tables) < 5 {
		t.Errorf("dumped %d tables (%v), want the whole schema", len(tables), tables)
	}
	return out.Bytes()
}
