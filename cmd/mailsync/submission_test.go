package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/mail"
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
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
)

// Site mail end to end: "mailsync serve" as a child process with an SMTP
// account on a scripted upstream peer, and real clients — swaks over the
// submission port, "mailsync sendmail", PHP's mail() and GNU Mailutils'
// mail through it.

const (
	siteMailAddr = "site@example.com"
	siteMailPass = "Site-Pa55word"
	siteMailName = "Example Site"
)

var submissionRE = regexp.MustCompile(`SMTP submission listening on (\S+)`)

// siteService is "mailsync serve" as a child process, with one user besides
// the admin and the system account site@example.com (named "Example Site",
// shared with users) on a STARTTLS upstream peer.
type siteService struct {
	cmd      *exec.Cmd
	vars     map[string]string
	url      string
	smtpAddr string // "" unless the submission server was asked for
	stdout   *output
	stderr   *output
	done     chan struct{}

	peer     *testpeer.SMTPServer
	ca       *testpeer.CA
	caFile   string
	admToken string
	annToken string
}

type siteOptions struct {
	submission bool // listen for SMTP submission, trusting loopback, with STARTTLS
	dialect    store.Dialect
	// data, when set, runs the upstream peer's DATA hook.
	data func(n int, msg []byte) error
}

func startSiteService(t *testing.T, o siteOptions) *siteService {
	t.Helper()
	bin := binary(t)
	s := &siteService{ca: testpeer.NewCA(t)}
	s.caFile = s.ca.WriteFile(t)
	s.vars = map[string]string{
		"MAILSYNC_DATA_DIR":          t.TempDir(),
		"MAILSYNC_LOG_LEVEL":         "info",
		"MAILSYNC_ALLOW_HOSTS":       "127.0.0.0/8",
		"MAILSYNC_EXTRA_CA_FILE":     s.caFile,
		"MAILSYNC_OUTBOX_LEASE":      "2s",
		"MAILSYNC_MAX_MESSAGE_BYTES": "262144",
		// Never the default port: other tests and services may hold it.
		"MAILSYNC_SUBMISSION_LISTEN": "127.0.0.1:0",
	}
	if o.dialect == store.Postgres {
		key, err := secret.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		s.vars["MAILSYNC_DB"], s.vars["MAILSYNC_SECRET_KEY"] = storetest.DSN(t, store.Postgres), key
	}
	if o.submission {
		cert := s.ca.Issue(t, testpeer.CertOptions{})
		dir := t.TempDir()
		certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		if err := os.WriteFile(certFile, cert.CertPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, cert.KeyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		s.vars["MAILSYNC_SUBMISSION_TLS_CERT"] = certFile
		s.vars["MAILSYNC_SUBMISSION_TLS_KEY"] = keyFile
		s.vars["MAILSYNC_SUBMISSION_TRUST_LOOPBACK"] = "true"
	}
	s.peer = testpeer.StartSMTP(t, &testpeer.SMTPOptions{
		Mode: testpeer.SMTPStartTLS, TLS: s.ca.ServerTLS(t),
		Users:  map[string]string{siteMailAddr: siteMailPass},
		Script: &testpeer.SMTPScript{Data: o.data},
	})
	s.start(t, bin, o.submission)
	s.admToken = s.stdout.waitFor(t, tokenRE, s.done, s.stderr)[1]

	code, body := s.api(t, s.admToken, "/api/v1/smtp-accounts", map[string]any{
		"email": siteMailAddr, "sender_name": siteMailName, "host": "localhost", "port": s.peer.Port(),
		"security": "starttls", "auth": "login", "login": siteMailAddr, "password": siteMailPass,
		"shared_with_users": true,
	})
	if code != http.StatusCreated {
		t.Fatalf("POST /api/v1/smtp-accounts = %d %s", code, body)
	}
	var out bytes.Buffer
	if c := run(context.Background(), []string{"user", "add", "--email", "ann@example.com", "--name", "Ann"},
		nil, &out, io.Discard, func(k string) string { return s.vars[k] }); c != 0 {
		t.Fatalf("user add = %d", c)
	}
	s.annToken = strings.TrimSpace(regexp.MustCompile(`mst_\S+`).FindString(out.String()))
	return s
}

// start runs serve; with submission, it needs the line that names the
// submission address, printed before the HTTP one.
func (s *siteService) start(t *testing.T, bin string, submission bool) {
	t.Helper()
	s.stdout, s.stderr, s.done = newOutput(), newOutput(), make(chan struct{})
	cmd := exec.Command(bin, "serve", "-listen", "127.0.0.1:0")
	cmd.Env = os.Environ()
	for k, v := range s.vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = s.stdout, s.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.cmd = cmd
	done := s.done
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { s.kill(t) })
	s.url = s.stdout.waitFor(t, listenRE, s.done, s.stderr)[1]
	if submission {
		m := submissionRE.FindStringSubmatch(s.stdout.String())
		if m == nil {
			t.Fatalf("serve printed no %q line before its HTTP address: the SMTP submission server is not wired into serve; stdout:\n%s",
				submissionRE, s.stdout)
		}
		s.smtpAddr = m[1]
	}
}

// kill ends serve with SIGKILL and waits for it.
func (s *siteService) kill(t *testing.T) {
	t.Helper()
	select {
	case <-s.done:
		return
	default:
	}
	if err := s.cmd.Process.Kill(); err != nil {
		t.Errorf("kill serve: %v", err)
	}
	<-s.done
}

func (s *siteService) api(t *testing.T, token, path string, body any) (int, []byte) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, s.url+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// sendmailEnv is the environment "mailsync sendmail" runs with.
func (s *siteService) sendmailEnv(token string, extra ...string) []string {
	return append(append(os.Environ(), "MAILSYNC_URL="+s.url, "MAILSYNC_TOKEN="+token), extra...)
}

// delivered waits for the n-th message at the upstream peer.
func (s *siteService) delivered(t *testing.T, n int) testpeer.SMTPMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, err := s.peer.WaitMessages(ctx, n)
	if err != nil {
		t.Fatalf("upstream: %v; serve log:\n%s", err, s.stderr)
	}
	return msgs[n-1]
}

func parseDelivered(t *testing.T, m testpeer.SMTPMessage) (mail.Header, string) {
	t.Helper()
	pm, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatalf("the upstream got an unreadable message: %v\n%s", err, m.Data)
	}
	body, _ := io.ReadAll(pm.Body)
	return pm.Header, string(body)
}

// wantSiteFrom checks that a message went out through the site account
// with the account's name filled in.
func wantSiteFrom(t *testing.T, what string, m testpeer.SMTPMessage, subject string) {
	t.Helper()
	h, _ := parseDelivered(t, m)
	if got := h.Get("From"); got != `"Example Site" <site@example.com>` {
		t.Errorf("%s: upstream From = %q, want the account's name added: \"Example Site\" <site@example.com>", what, got)
	}
	if h.Get("Subject") != subject || m.AuthUser != siteMailAddr || !m.TLS {
		t.Errorf("%s: upstream Subject %q via %q (TLS %v), want %q via %s over TLS", what, h.Get("Subject"), m.AuthUser, m.TLS, subject, siteMailAddr)
	}
}

type cmdResult struct {
	code   int
	stdout string
	stderr string
}

func runCmd(t *testing.T, env []string, stdin io.Reader, name string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env, cmd.Stdin = env, stdin
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %s: %v", name, err)
	}
	return cmdResult{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errOut.String()}
}

func TestSendmailArgs(t *testing.T) {
	cases := []struct {
		args []string
		want sendmailArgs
		err  string
	}{
		{[]string{"-t", "-i"}, sendmailArgs{readRcpts: true, ignoreDots: true}, ""},
		{[]string{"-ti", "-f", "a@b.c", "-F", "Site Robot"}, sendmailArgs{readRcpts: true, ignoreDots: true, from: "a@b.c", fullName: "Site Robot"}, ""},
		// cron (Debian): -FCronDaemon -i -B8BITMIME -oem
		{[]string{"-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root@example.com"}, sendmailArgs{ignoreDots: true, fullName: "CronDaemon", rcpts: []string{"root@example.com"}}, ""},
		// GNU Mailutils' sendmail mailer: -oi -f FROM -t
		{[]string{"-oi", "-f", "<u@example.com>", "-t"}, sendmailArgs{readRcpts: true, ignoreDots: true, from: "u@example.com"}, ""},
		{[]string{"-odi", "-oee", "-bm", "-v", "-N", "never", "-R", "hdrs", "-V", "id", "-U", "-G", "-n", "-m", "-x", "--unknown", "a@b.c,d@e.f"},
			sendmailArgs{verbose: true, rcpts: []string{"a@b.c", "d@e.f"}}, ""},
		{[]string{"-fa@b.c", "--", "-x@y.z"}, sendmailArgs{from: "a@b.c", rcpts: []string{"-x@y.z"}}, ""},
		{[]string{"-r", "a@b.c", "x@y.z"}, sendmailArgs{from: "a@b.c", rcpts: []string{"x@y.z"}}, ""},
		{[]string{"-q15m"}, sendmailArgs{queueRun: true}, ""},
		{[]string{"-bs"}, sendmailArgs{}, "-bs is not supported"},
		{[]string{"-t", "-f"}, sendmailArgs{readRcpts: true}, "-f needs a value"},
	}
	for _, tc := range cases {
		got, err := parseSendmailArgs(tc.args)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseSendmailArgs(%q) error = %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || got.readRcpts != tc.want.readRcpts || got.ignoreDots != tc.want.ignoreDots || got.from != tc.want.from ||
			got.fullName != tc.want.fullName || got.verbose != tc.want.verbose || got.queueRun != tc.want.queueRun ||
			!slices.Equal(got.rcpts, tc.want.rcpts) {
			t.Errorf("parseSendmailArgs(%q) = %+v, %v; want %+v", tc.args, got, err, tc.want)
		}
	}
}

func TestSendmailConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sendmail.conf")
	write := func(text string, mode os.FileMode) {
		if err := os.WriteFile(file, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(file, mode); err != nil {
			t.Fatal(err)
		}
	}
	vars := map[string]string{"MAILSYNC_CONFIG": file}
	getenv := func(k string) string { return vars[k] }

	write("# site\nurl = http://127.0.0.1:8080\ntoken = \"mst_file\"\nfrom = site@example.com\n", 0o640)
	c, err := loadSendmailConfig(getenv)
	if err != nil || c.url != "http://127.0.0.1:8080" || c.token != "mst_file" || c.from != "site@example.com" {
		t.Errorf("config file: %+v, %v", c, err)
	}
	vars["MAILSYNC_TOKEN"] = "mst_env"
	if c, _ := loadSendmailConfig(getenv); c.token != "mst_env" {
		t.Errorf("MAILSYNC_TOKEN does not win over the file: %q", c.token)
	}
	delete(vars, "MAILSYNC_TOKEN")
	write("url = http://127.0.0.1:8080\ntoken = mst_file\n", 0o644)
	if _, err := loadSendmailConfig(getenv); err == nil || !strings.Contains(err.Error(), "chmod o-rwx") {
		t.Errorf("a token file others may read = %v, want a refusal", err)
	}
	write("url = http://127.0.0.1:8080\npassword = x\n", 0o600)
	if _, err := loadSendmailConfig(getenv); err == nil || !strings.Contains(err.Error(), "unknown setting") {
		t.Errorf("unknown key = %v", err)
	}
	if _, err := loadSendmailConfig(func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "MAILSYNC_URL") {
		t.Errorf("no configuration = %v, want one naming MAILSYNC_URL", err)
	}
}

// sendmail gives a message without a usable From the configured from (or
// -f), named as -F says, and leaves a real From alone.
func TestSendmailFixFrom(t *testing.T) {
	cases := []struct {
		header, envFrom, cfgFrom, name, want string
	}{
		{"From: root (Cron Daemon)\nTo: ops@example.com\n", "", "cron@example.com", "CronDaemon", "From: \"CronDaemon\" <cron@example.com>\r\nTo: ops@example.com\n"},
		{"To: r@example.org\n", "root@host.example", "site@example.com", "", "To: r@example.org\nFrom: <site@example.com>\r\n"},
		{"To: r@example.org\n", "site@example.com", "", "Site", "To: r@example.org\nFrom: \"Site\" <site@example.com>\r\n"},
		{" folded\nTo: r@example.org\n", "site@example.com", "", "", " folded\nTo: r@example.org\nFrom: <site@example.com>\r\n"},
		{"From: Sales <sales@example.com>\nTo: r@example.org\n", "x@example.com", "site@example.com", "", "From: Sales <sales@example.com>\nTo: r@example.org\n"},
		{"To: r@example.org\n", "", "", "", "To: r@example.org\n"},
	}
	for _, tc := range cases {
		h, _, err := readHeader(bufio.NewReader(strings.NewReader(tc.header+"\nbody\n")), true)
		if err != nil {
			t.Fatal(err)
		}
		var got strings.Builder
		for _, f := range fixFrom(splitFields(h), tc.envFrom, tc.cfgFrom, tc.name) {
			got.Write(f.raw)
		}
		if got.String() != tc.want {
			t.Errorf("fixFrom(%q, -f %q, from %q, -F %q) = %q, want %q", tc.header, tc.envFrom, tc.cfgFrom, tc.name, got.String(), tc.want)
		}
	}
}

// "mailsync sendmail", PHP's mail() and GNU Mailutils' mail submit through
// the running service; the message leaves through the account its From
// names, with the account's name filled in.
func TestSendmailClients(t *testing.T) {
	s := startSiteService(t, siteOptions{})
	bin := binary(t)
	n := 0

	t.Run("sendmail -t -i", func(t *testing.T) {
		msg := "From: site@example.com\nTo: Rcpt <rcpt@example.org>\nBcc: hidden@example.org\nSubject: via sendmail\n\nline one\n.\nline three\n"
		r := runCmd(t, s.sendmailEnv(s.annToken), strings.NewReader(msg), bin, "sendmail", "-t", "-i", "-v")
		if r.code != 0 || !strings.Contains(r.stdout, "queued as <") {
			t.Fatalf("sendmail -t -i = %d %q %q", r.code, r.stdout, r.stderr)
		}
		n++
		got := s.delivered(t, n)
		wantSiteFrom(t, "sendmail", got, "via sendmail")
		if _, body := parseDelivered(t, got); body != "line one\r\n.\r\nline three\r\n" {
			t.Errorf("body %q: -i keeps the lone dot and what follows", body)
		}
		if !slices.Equal(got.To, []string{"rcpt@example.org", "hidden@example.org"}) || bytes.Contains(got.Data, []byte("hidden@")) {
			t.Errorf("recipients %v; the Bcc must be a recipient and not a header:\n%s", got.To, got.Data)
		}
	})

	t.Run("sendmail without -i stops at the dot", func(t *testing.T) {
		msg := "From: site@example.com\r\nSubject: dot\r\n\r\nbefore\r\n.\r\nafter\r\n"
		r := runCmd(t, s.sendmailEnv(s.annToken), strings.NewReader(msg), bin, "sendmail", "rcpt@example.org")
		if r.code != 0 {
			t.Fatalf("sendmail = %d %q", r.code, r.stderr)
		}
		n++
		got := s.delivered(t, n)
		if _, body := parseDelivered(t, got); body != "before\r\n" || !slices.Equal(got.To, []string{"rcpt@example.org"}) {
			t.Errorf("body %q to %v, want the message up to the lone dot, to the argument", body, got.To)
		}
	})

	t.Run("PHP mail()", func(t *testing.T) {
		php, err := exec.LookPath("php")
		if err != nil {
			testpeer.Missing(t, "php", "the php command (Debian package php-cli) is not installed")
		}
		script := `var_dump(mail("Rcpt <rcpt@example.org>", "via PHP", "Hello from PHP\nSecond line", "From: site@example.com\r\nX-Mailer: PHP/" . PHP_VERSION));`
		r := runCmd(t, s.sendmailEnv(s.annToken), nil, php, "-n", "-d", "sendmail_path="+bin+" sendmail -t -i", "-r", script)
		if r.code != 0 || !strings.Contains(r.stdout, "bool(true)") {
			t.Fatalf("PHP mail() = %q (exit %d) %q", r.stdout, r.code, r.stderr)
		}
		n++
		got := s.delivered(t, n)
		wantSiteFrom(t, "PHP mail()", got, "via PHP")
		if h, body := parseDelivered(t, got); !strings.HasPrefix(h.Get("X-Mailer"), "PHP/") || body != "Hello from PHP\r\nSecond line\r\n" {
			t.Errorf("PHP mail(): X-Mailer %q body %q", h.Get("X-Mailer"), body)
		}
	})

	t.Run("mailutils mail", func(t *testing.T) {
		mailCmd, err := exec.LookPath("mail")
		if err == nil {
			if out, verr := exec.Command(mailCmd, "--version").Output(); verr != nil || !bytes.Contains(out, []byte("GNU Mailutils")) {
				err = fmt.Errorf("%s is not GNU Mailutils' mail", mailCmd)
			}
		}
		if err != nil {
			testpeer.Missing(t, "mailutils", fmt.Sprintf("GNU Mailutils' mail command (Debian package mailutils): %v", err))
		}
		// No From in the message: the configured from, as for cron mail.
		env := s.sendmailEnv(s.annToken, "MAILSYNC_FROM="+siteMailAddr, "HOME="+t.TempDir())
		r := runCmd(t, env, strings.NewReader("Hello from mailutils\n"), mailCmd, "-n",
			"-E", fmt.Sprintf(`set sendmail="prog://%s?sendmail&-t&-i"`, bin), "-s", "via mailutils", "rcpt@example.org")
		if r.code != 0 {
			t.Fatalf("mail = %d %q %q", r.code, r.stdout, r.stderr)
		}
		n++
		got := s.delivered(t, n)
		wantSiteFrom(t, "mailutils", got, "via mailutils")
	})

	t.Run("unroutable From", func(t *testing.T) {
		msg := "From: nobody@example.com\nTo: rcpt@example.org\nSubject: x\n\nx\n"
		r := runCmd(t, s.sendmailEnv(s.annToken), strings.NewReader(msg), bin, "sendmail", "-t")
		if r.code != exUnavailable || !strings.Contains(r.stderr, "nobody@example.com") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("unroutable From = exit %d, stderr %q; want 69 and one line naming the address", r.code, r.stderr)
		}
	})

	t.Run("wrong token, malformed, no recipients", func(t *testing.T) {
		msg := "From: site@example.com\nTo: rcpt@example.org\n\nx\n"
		if r := runCmd(t, s.sendmailEnv("mst_wrong"), strings.NewReader(msg), bin, "sendmail", "-t"); r.code != exNoPerm {
			t.Errorf("wrong token = %d %q, want 77", r.code, r.stderr)
		}
		if r := runCmd(t, s.sendmailEnv(s.annToken), strings.NewReader("not a header line\n\nx\n"), bin, "sendmail", "r@example.org"); r.code != exDataErr {
			t.Errorf("malformed message = %d %q, want 65", r.code, r.stderr)
		}
		if r := runCmd(t, s.sendmailEnv(s.annToken), strings.NewReader(msg), bin, "sendmail"); r.code != exUsage {
			t.Errorf("no recipients and no -t = %d %q, want 64", r.code, r.stderr)
		}
	})
	t.Run("too large", func(t *testing.T) {
		msg := "From: site@example.com\nTo: rcpt@example.org\n\n" + strings.Repeat("0123456789abcdef\n", 300<<10/17)
		in := &countingReader{r: strings.NewReader(msg)}
		r := runCmd(t, s.sendmailEnv(s.annToken), in, bin, "sendmail", "-t", "-i")
		if r.code != exDataErr || !strings.Contains(r.stderr, "larger than") || in.n != len(msg) {
			t.Errorf("too large = exit %d %q after reading %d of %d bytes; want 65, all read", r.code, r.stderr, in.n, len(msg))
		}
	})

	t.Run("raw route refuses other bodies and parameters", func(t *testing.T) {
		for _, tc := range []struct{ query, ctype, code string }{
			{"rcpt=r@example.org", "text/plain", "unsupported_media_type"},
			{"rcpt=r@example.org&to=x@example.org", "message/rfc822", "unknown_field"},
			{"", "message/rfc822", "required"},
		} {
			req, _ := http.NewRequest(http.MethodPost, s.url+"/api/v1/outbox/raw?"+tc.query,
				strings.NewReader("From: site@example.com\r\n\r\nx\r\n"))
			req.Header.Set("Authorization", "Bearer "+s.annToken)
			req.Header.Set("Content-Type", tc.ctype)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"code":"`+tc.code+`"`) {
				t.Errorf("POST /api/v1/outbox/raw?%s (%s) = %d %s, want 400 %s", tc.query, tc.ctype, resp.StatusCode, body, tc.code)
			}
		}
	})
	if msgs := s.peer.Messages(); len(msgs) != n {
		t.Errorf("the upstream got %d messages, want %d", len(msgs), n)
	}
}

// countingReader counts what the program read of its standard input.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// With the service down, sendmail exits 75 with one line on stderr after
// reading the whole message (its writer is not cut off), and PHP's mail()
// answers false: the caller keeps the message and knows to retry.
func TestSendmailServiceDown(t *testing.T) {
	bin := binary(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now: connections are refused
	env := append(os.Environ(), "MAILSYNC_URL="+down, "MAILSYNC_TOKEN=mst_any")

	msg := "From: site@example.com\nTo: rcpt@example.org\nSubject: down\n\n" + strings.Repeat("a line of the body\n", 50000)
	in := &countingReader{r: strings.NewReader(msg)}
	r := runCmd(t, env, in, bin, "sendmail", "-t", "-i")
	if r.code != exTempFail || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "try again later") {
		t.Errorf("service down = exit %d, stderr %q; want 75 and one line telling to try again", r.code, r.stderr)
	}
	if in.n != len(msg) {
		t.Errorf("sendmail read %d of the %d bytes of its input before exiting", in.n, len(msg))
	}

	php, err := exec.LookPath("php")
	if err != nil {
		testpeer.Missing(t, "php", "the php command (Debian package php-cli) is not installed")
	}
	script := `var_dump(mail("rcpt@example.org", "down", "body", "From: site@example.com"));`
	r = runCmd(t, env, nil, php, "-n", "-d", "sendmail_path="+bin+" sendmail -t -i", "-r", script)
	if !strings.Contains(r.stdout, "bool(false)") {
		t.Errorf("PHP mail() with the service down = %q %q, want false", r.stdout, r.stderr)
	}
}

// swaks delivers over the submission port of the running service: in clear
// text from a trusted loopback client, and with STARTTLS and AUTH as a user
// with its token; an unroutable From gets 550 5.7.1 naming the address.
func TestSubmissionPortSwaks(t *testing.T) {
	swaks, err := exec.LookPath("swaks")
	if err != nil {
		testpeer.Missing(t, "swaks", "the swaks command (Debian package swaks) is not installed")
	}
	s := startSiteService(t, siteOptions{submission: true})
	host, port, _ := net.SplitHostPort(s.smtpAddr)
	base := []string{"--server", host, "--port", port, "--ehlo", "client.test", "--to", "rcpt@example.org"}
	tlsAuth := []string{"--tls", "--tls-verify", "--tls-ca-path", s.caFile, "--tls-sni", "localhost",
		"--auth", "PLAIN", "--auth-user", "ann@example.com", "--auth-password", s.annToken}
	runs := []struct {
		name string
		args []string
	}{
		{"plain trusted loopback", nil},
		{"starttls auth", tlsAuth},
		{"starttls auth login pipelining", append(slices.Clone(tlsAuth[:len(tlsAuth)-6]),
			"--auth", "LOGIN", "--auth-user", "ann@example.com", "--auth-password", s.annToken, "--pipeline")},
	}
	for i, r := range runs {
		subject := "swaks " + r.name
		args := append(slices.Clone(base), append([]string{"--from", siteMailAddr, "--header", "Subject: " + subject, "--body", "sent by swaks"}, r.args...)...)
		res := runCmd(t, os.Environ(), nil, swaks, args...)
		if res.code != 0 || !strings.Contains(res.stdout, "250 2.0.0 OK: queued as <") {
			t.Fatalf("swaks %s = %d\n%s%s", r.name, res.code, res.stdout, res.stderr)
		}
		wantSiteFrom(t, "swaks "+r.name, s.delivered(t, i+1), subject)
	}
	res := runCmd(t, os.Environ(), nil, swaks, append(slices.Clone(base), append([]string{"--from", "nobody@example.com"}, tlsAuth...)...)...)
	if res.code == 0 || !regexp.MustCompile(`550 5\.7\.1 .*nobody@example\.com`).MatchString(res.stdout) {
		t.Errorf("swaks with an unroutable From = %d, want 550 5.7.1 naming the address:\n%s", res.code, res.stdout)
	}
}

// A message acknowledged with 250 on the submission port is in the database
// at that moment: serve killed with SIGKILL right after the reply sends it
// after a restart.
func TestSubmissionSurvivesSIGKILL(t *testing.T) {
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		t.Run(string(d), func(t *testing.T) { submissionSurvivesSIGKILL(t, d) })
	}
}

func submissionSurvivesSIGKILL(t *testing.T, d store.Dialect) {
	killed := make(chan struct{})
	var killOnce sync.Once
	// Until the kill, the upstream holds any delivery and then refuses it
	// unrecorded: only the restarted service can deliver.
	s := startSiteService(t, siteOptions{submission: true, dialect: d, data: func(_ int, _ []byte) error {
		select {
		case <-killed:
			return nil
		default:
		}
		<-killed
		return testpeer.SMTPReply(451, "4.3.0", "held until the kill, then refused")
	}})
	// Registered after the peer's own cleanup, so it runs first and frees a
	// held DATA before the peer waits for its connections.
	t.Cleanup(func() { killOnce.Do(func() { close(killed) }) })

	c, err := smtp.DialStartTLS(s.smtpAddr, s.ca.ClientTLS("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "ann@example.com", s.annToken)); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(siteMailAddr, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("rcpt@example.org", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "From: site@example.com\r\nTo: rcpt@example.org\r\nSubject: survives SIGKILL\r\n\r\nkill me\r\n")
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	s.kill(t) // right after the 250
	m := regexp.MustCompile(`queued as <([^>]+)>`).FindStringSubmatch(resp.StatusText)
	if m == nil {
		t.Fatalf("250 text %q names no Message-ID", resp.StatusText)
	}
	id := m[1]

	dsn := s.vars["MAILSYNC_DB"]
	if dsn == "" {
		dsn = "sqlite://" + filepath.Join(s.vars["MAILSYNC_DATA_DIR"], "mailsync.db")
	}
	db, err := store.Open(context.Background(), dsn, store.Options{MaxOpenConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := db.Gorm.Raw("SELECT COUNT(*) FROM outbox WHERE message_id = ?", id).Scan(&n).Error; err != nil || n != 1 {
		t.Errorf("after the kill the outbox has %d rows with Message-ID %s (%v), want 1", n, id, err)
	}
	db.Close()

	before := len(s.peer.Messages())
	killOnce.Do(func() { close(killed) })
	s.start(t, binary(t), true)
	got := s.delivered(t, before+1)
	h, _ := parseDelivered(t, got)
	if h.Get("Message-Id") != "<"+id+">" || h.Get("Subject") != "survives SIGKILL" {
		t.Errorf("after the restart the upstream got Message-ID %q Subject %q, want <%s>", h.Get("Message-Id"), h.Get("Subject"), id)
	}
}
