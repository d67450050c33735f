package mailbox

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/i18n"
	"github.com/mailsync/mailsync/internal/netguard"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/outgoing"
)

// loopbackDialer is the guarded dialer with 127.0.0.0/8 allowed, as
// MAILSYNC_ALLOW_HOSTS would allow it for tests.
func loopbackDialer() *netguard.Dialer {
	return &netguard.Dialer{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testNetwork returns a network that trusts pool and logs at debug level
// into the returned buffer.
func testNetwork(pool *x509.CertPool) (*IMAPNetwork, *syncBuffer) {
	logs := &syncBuffer{}
	return &IMAPNetwork{
		Dialer:  loopbackDialer(),
		RootCAs: pool,
		Logger:  slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}, logs
}

func stepNames(rep outgoing.Report) []outgoing.Step {
	var out []outgoing.Step
	for _, s := range rep.Steps {
		out = append(out, s.Step)
	}
	return out
}

func lastStep(rep outgoing.Report) outgoing.StepResult {
	if len(rep.Steps) == 0 {
		return outgoing.StepResult{}
	}
	return rep.Steps[len(rep.Steps)-1]
}

// assertNoSecret fails when pw appears in the result's JSON or the logs.
func assertNoSecret(t *testing.T, res IMAPCheckResult, logs *syncBuffer, pw string) {
	t.Helper()
	data, err := json.Marshal(res)
	if err != nil {
		t.Fatalf("json.Marshal(result): %v", err)
	}
	if strings.Contains(string(data), pw) {
		t.Errorf("Check() result contains the password: %s", data)
	}
	if logs != nil && strings.Contains(logs.String(), pw) {
		t.Errorf("Check() logs contain the password:\n%s", logs.String())
	}
}

var (
	sslSteps      = []outgoing.Step{"dns", "tcp", "tls", "greeting", "login", "list"}
	starttlsSteps = []outgoing.Step{"dns", "tcp", "greeting", "starttls", "login", "list"}
	plainSteps    = []outgoing.Step{"dns", "tcp", "greeting", "login", "list"}
)

// TestCheckDovecot drives a real Dovecot: the certificate is verified
// against the test CA, the folders come from LIST with SPECIAL-USE.
func TestCheckDovecot(t *testing.T) {
	d := testpeer.StartDovecot(t, nil)
	const login, password = "alice", "pw-Xyzzy-42"
	d.AddUser(t, login, password)

	cases := []struct {
		name       string
		port       int
		security   outgoing.Security
		password   string
		wantOK     bool
		wantSteps  []outgoing.Step
		wantFailed outgoing.Step
		wantCode   string
	}{
		{"ssl", d.TLSPort(), outgoing.SecuritySSL, password, true, sslSteps, "", ""},
		{"starttls", d.PlainPort(), outgoing.SecuritySTARTTLS, password, true, starttlsSteps, "", ""},
		{"none", d.PlainPort(), outgoing.SecurityNone, password, true, plainSteps, "", ""},
		{"wrong password over ssl", d.TLSPort(), outgoing.SecuritySSL, "wrong-" + password, false, sslSteps[:5], StepLogin, outgoing.CodeAuthRejected},
		{"wrong password over starttls", d.PlainPort(), outgoing.SecuritySTARTTLS, "wrong-" + password, false, starttlsSteps[:5], StepLogin, outgoing.CodeAuthRejected},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, logs := testNetwork(d.CA().Pool())
			s := IMAPSettings{Host: d.Host(), Port: c.port, Security: c.security, Login: login, Password: secret.Secret(c.password)}
			res := n.Check(context.Background(), s, "en", 0)
			rep := res.Report
			if rep.OK != c.wantOK {
				t.Fatalf("Check() OK = %v, want %v; steps: %+v", rep.OK, c.wantOK, rep.Steps)
			}
			if got := stepNames(rep); !slices.Equal(got, c.wantSteps) {
				t.Errorf("Check() steps = %q, want %q", got, c.wantSteps)
			}
			if rep.Failed != c.wantFailed {
				t.Errorf("Check() step = %q, want %q", rep.Failed, c.wantFailed)
			}
			assertNoSecret(t, res, logs, password)
			if !c.wantOK {
				last := lastStep(rep)
				if last.Code != c.wantCode {
					t.Errorf("Check() code = %q, want %q", last.Code, c.wantCode)
				}
				if last.Reply == nil || last.Reply.Code != 0 || !strings.Contains(last.Reply.Text, "AUTHENTICATIONFAILED") {
					t.Errorf("Check() reply = %+v, want Code 0 and a text with AUTHENTICATIONFAILED", last.Reply)
				}
				if last.Explanation == "" || last.Hint == "" {
					t.Errorf("Check() explanation, hint = %q, %q, want both", last.Explanation, last.Hint)
				}
				if res.Folders != nil {
					t.Errorf("Check() folders = %+v, want none after a failed login", res.Folders)
				}
				return
			}
			sent, ok := SentFolder(res.Folders, "")
			if !ok || sent.Name != "Sent" || sent.SpecialUse != `\Sent` {
				t.Errorf("SentFolder(%+v) = %+v, %v, want Sent marked \\Sent", res.Folders, sent, ok)
			}
			if !slices.ContainsFunc(res.Folders, func(f Folder) bool { return f.Name == "INBOX" }) || res.Folders[0].Name != "INBOX" {
				t.Errorf("Check() folders = %+v, want INBOX first", res.Folders)
			}
			if got, want := DefaultSyncFolders(res.Folders, ""), []string{"INBOX", "Sent"}; !slices.Equal(got, want) {
				t.Errorf("DefaultSyncFolders() = %q, want %q", got, want)
			}
			if !slices.Contains(res.Capabilities, string(imap.CapSpecialUse)) {
				t.Errorf("Check() capabilities = %q, want SPECIAL-USE among them", res.Capabilities)
			}
			for _, st := range rep.Steps {
				if !st.OK || st.Code != "" {
					t.Errorf("Check() step %q = %+v, want OK without code", st.Step, st)
				}
			}
			if c.security != outgoing.SecurityNone {
				tlsStep := rep.Steps[slices.IndexFunc(rep.Steps, func(s outgoing.StepResult) bool {
					return s.Step == outgoing.StepTLS || s.Step == outgoing.StepSTARTTLS
				})]
				if !strings.Contains(tlsStep.Detail, "TLS 1.") || !strings.Contains(tlsStep.Detail, "127.0.0.1") {
					t.Errorf("Check() %s detail = %q, want the TLS version and the certificate's names", tlsStep.Step, tlsStep.Detail)
				}
			}
		})
	}
}

// TestDialDovecot: Dial returns a logged-in client that can SELECT INBOX;
// a wrong password is an *IMAPError at login with the server's reply.
func TestDialDovecot(t *testing.T) {
	d := testpeer.StartDovecot(t, nil)
	const login, password = "bob", "pw-Plugh-7"
	d.AddUser(t, login, password)
	n, logs := testNetwork(d.CA().Pool())
	s := IMAPSettings{Host: d.Host(), Port: d.TLSPort(), Security: outgoing.SecuritySSL, Login: login, Password: password}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := n.Dial(ctx, s)
	if err != nil {
		t.Fatalf("Dial() error = %v", err)
	}
	data, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("Select(INBOX) error = %v", err)
	}
	if data.UIDValidity == 0 {
		t.Errorf("Select(INBOX) UIDValidity = 0, want a value")
	}
	if err := c.Logout().Wait(); err != nil {
		t.Errorf("Logout() error = %v", err)
	}
	_ = c.Close()

	s.Password = "wrong"
	_, err = n.Dial(context.Background(), s)
	var ie *IMAPError
	if !errors.As(err, &ie) {
		t.Fatalf("Dial() with a wrong password error = %v, want an *IMAPError", err)
	}
	if ie.Step != StepLogin || ie.Code != "AUTHENTICATIONFAILED" || ie.Reply == nil || ie.Temporary() {
		t.Errorf("Dial() error = %+v (temporary %v), want step %q, code AUTHENTICATIONFAILED, a reply, not temporary", ie, ie.Temporary(), StepLogin)
	}
	if !strings.HasPrefix(err.Error(), "imap login: server replied NO [AUTHENTICATIONFAILED]") {
		t.Errorf("Dial() error = %q, want it to start with %q", err, "imap login: server replied NO [AUTHENTICATIONFAILED]")
	}
	if strings.Contains(logs.String(), password) {
		t.Errorf("Dial() logs contain the password:\n%s", logs.String())
	}
}

// TestDialClosesWithContext: the client lives as long as Dial's context.
func TestDialClosesWithContext(t *testing.T) {
	srv := testpeer.StartIMAP(t, nil)
	n, _ := testNetwork(srv.CA().Pool())
	s := IMAPSettings{Host: srv.Host(), Port: srv.Port(), Security: outgoing.SecuritySSL, Login: srv.User(), Password: secret.Secret(srv.Password())}
	ctx, cancel := context.WithCancel(context.Background())
	c, err := n.Dial(ctx, s)
	if err != nil {
		t.Fatalf("Dial() error = %v", err)
	}
	defer c.Close()
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatalf("Select(INBOX) error = %v", err)
	}
	cancel()
	select {
	case <-c.Closed():
	case <-time.After(5 * time.Second):
		t.Fatalf("client still open 5 s after its context was cancelled")
	}
}

// TestCheckIMAPServer covers what needs a server configured wrongly, with
// go-imap's in-process server.
func TestCheckIMAPServer(t *testing.T) {
	ca := testpeer.NewCA(t)
	otherCA := testpeer.NewCA(t)
	good := testpeer.StartIMAP(t, &testpeer.IMAPOptions{CA: ca})
	otherName := testpeer.StartIMAP(t, &testpeer.IMAPOptions{CA: ca, TLS: ca.ServerTLS(t, "other.example")})
	startTLS := testpeer.StartIMAP(t, &testpeer.IMAPOptions{CA: ca, StartTLS: true})
	plain := testpeer.StartIMAP(t, &testpeer.IMAPOptions{CA: ca, Plain: true})

	cases := []struct {
		name       string
		srv        *testpeer.IMAPServer
		security   outgoing.Security
		pool       *x509.CertPool
		password   string // "" = the right one
		timeout    time.Duration
		wantOK     bool
		wantSteps  []outgoing.Step
		wantFailed outgoing.Step
		wantCode   string
		wantText   string // in the explanation
	}{
		{name: "ssl", srv: good, security: outgoing.SecuritySSL, wantOK: true, wantSteps: sslSteps},
		{name: "starttls", srv: startTLS, security: outgoing.SecuritySTARTTLS, wantOK: true, wantSteps: starttlsSteps},
		{name: "none", srv: plain, security: outgoing.SecurityNone, wantOK: true, wantSteps: plainSteps},
		{
			name: "certificate for another name", srv: otherName, security: outgoing.SecuritySSL,
			wantSteps: sslSteps[:3], wantFailed: outgoing.StepTLS, wantCode: outgoing.CodeTLSNameMismatch, wantText: "other.example",
		},
		{
			name: "untrusted certificate", srv: good, security: outgoing.SecuritySSL, pool: otherCA.Pool(),
			wantSteps: sslSteps[:3], wantFailed: outgoing.StepTLS, wantCode: outgoing.CodeTLSUntrusted,
		},
		{
			name: "untrusted certificate after STARTTLS", srv: startTLS, security: outgoing.SecuritySTARTTLS, pool: otherCA.Pool(),
			wantSteps: starttlsSteps[:4], wantFailed: outgoing.StepSTARTTLS, wantCode: outgoing.CodeTLSUntrusted,
		},
		{
			name: "ssl to a plain port", srv: plain, security: outgoing.SecuritySSL,
			wantSteps: sslSteps[:3], wantFailed: outgoing.StepTLS, wantCode: outgoing.CodeTLSNotSpoken,
		},
		{
			name: "starttls not offered", srv: plain, security: outgoing.SecuritySTARTTLS,
			wantSteps: starttlsSteps[:4], wantFailed: outgoing.StepSTARTTLS, wantCode: outgoing.CodeSTARTTLSMissing,
		},
		{
			name: "none where LOGIN needs TLS", srv: startTLS, security: outgoing.SecurityNone,
			wantSteps: plainSteps[:4], wantFailed: StepLogin, wantCode: outgoing.CodeAuthNeedsTLS,
		},
		{
			name: "none to an implicit-TLS port", srv: good, security: outgoing.SecurityNone, timeout: time.Second,
			wantSteps: plainSteps[:3], wantFailed: StepGreeting, wantCode: outgoing.CodeTimeout,
		},
		{
			name: "wrong password", srv: good, security: outgoing.SecuritySSL, password: "wrong",
			wantSteps: sslSteps[:5], wantFailed: StepLogin, wantCode: outgoing.CodeAuthRejected,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pool := c.pool
			if pool == nil {
				pool = ca.Pool()
			}
			n, logs := testNetwork(pool)
			pw := c.password
			if pw == "" {
				pw = c.srv.Password()
			}
			s := IMAPSettings{Host: c.srv.Host(), Port: c.srv.Port(), Security: c.security, Login: c.srv.User(), Password: secret.Secret(pw)}
			res := n.Check(context.Background(), s, "en", c.timeout)
			rep := res.Report
			if rep.OK != c.wantOK {
				t.Fatalf("Check() OK = %v, want %v; steps: %+v", rep.OK, c.wantOK, rep.Steps)
			}
			if got := stepNames(rep); !slices.Equal(got, c.wantSteps) {
				t.Errorf("Check() steps = %q, want %q", got, c.wantSteps)
			}
			if rep.Failed != c.wantFailed {
				t.Errorf("Check() step = %q, want %q", rep.Failed, c.wantFailed)
			}
			last := lastStep(rep)
			if last.Code != c.wantCode {
				t.Errorf("Check() code = %q, want %q (%s)", last.Code, c.wantCode, last.Explanation)
			}
			if c.wantText != "" && !strings.Contains(last.Explanation, c.wantText) {
				t.Errorf("Check() explanation = %q, want it to contain %q", last.Explanation, c.wantText)
			}
			if !c.wantOK && (last.Explanation == "" || last.Hint == "") {
				t.Errorf("Check() explanation, hint = %q, %q, want both", last.Explanation, last.Hint)
			}
			assertNoSecret(t, res, logs, c.srv.Password())
			if c.wantOK {
				// imapmemserver has no SPECIAL-USE: Sent is found by name.
				sent, ok := SentFolder(res.Folders, "")
				if !ok || sent.Name != "Sent" || sent.SpecialUse != "" {
					t.Errorf("SentFolder(%+v) = %+v, %v, want Sent without attribute", res.Folders, sent, ok)
				}
				if got, want := DefaultSyncFolders(res.Folders, ""), []string{"INBOX", "Sent"}; !slices.Equal(got, want) {
					t.Errorf("DefaultSyncFolders() = %q, want %q", got, want)
				}
			}
		})
	}
}

// stallServer accepts connections and never writes. Each accepted
// connection is signalled on the returned channel.
func stallServer(t *testing.T) (port int, accepted <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	acc := make(chan struct{}, 16)
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			select {
			case acc <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().(*net.TCPAddr).Port, acc
}

// freePort returns a loopback port with no listener.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	return port
}

func TestCheckNetworkFailures(t *testing.T) {
	stalled, _ := stallServer(t)
	refused := freePort(t)
	cases := []struct {
		name       string
		dialer     outgoing.Dialer
		host       string
		port       int
		security   outgoing.Security
		timeout    time.Duration
		wantFailed outgoing.Step
		wantCode   string
		wantText   string // in the explanation
		wantHint   string // in the hint
	}{
		{
			name: "stalled greeting", host: "127.0.0.1", port: stalled, security: outgoing.SecurityNone, timeout: time.Second,
			wantFailed: StepGreeting, wantCode: outgoing.CodeTimeout, wantHint: "993",
		},
		{
			name: "stalled TLS handshake", host: "127.0.0.1", port: stalled, security: outgoing.SecuritySSL, timeout: time.Second,
			wantFailed: outgoing.StepTLS, wantCode: outgoing.CodeTimeout, wantHint: "143",
		},
		{
			name: "stalled greeting before STARTTLS", host: "127.0.0.1", port: stalled, security: outgoing.SecuritySTARTTLS, timeout: time.Second,
			wantFailed: StepGreeting, wantCode: outgoing.CodeTimeout,
		},
		{
			name: "refused port", host: "127.0.0.1", port: refused, security: outgoing.SecuritySSL,
			wantFailed: outgoing.StepTCP, wantCode: outgoing.CodeConnectionRefused, wantHint: "993",
		},
		{
			name: "blocked address", dialer: &netguard.Dialer{}, host: "localhost", port: 993, security: outgoing.SecuritySSL,
			wantFailed: outgoing.StepDNS, wantCode: outgoing.CodeAddressBlocked, wantText: "localhost", wantHint: netguard.AllowHostsEnv,
		},
		{
			name: "blocked literal", dialer: &netguard.Dialer{}, host: "10.0.0.1", port: 993, security: outgoing.SecuritySSL,
			wantFailed: outgoing.StepDNS, wantCode: outgoing.CodeAddressBlocked, wantText: "10.0.0.1",
		},
		{
			name: "invalid settings", host: "imap.example.com:993", port: 993, security: outgoing.SecuritySSL,
			wantFailed: outgoing.StepDNS, wantCode: outgoing.CodeInvalidSettings, wantText: "host",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, _ := testNetwork(x509.NewCertPool())
			if c.dialer != nil {
				n.Dialer = c.dialer
			}
			s := IMAPSettings{Host: c.host, Port: c.port, Security: c.security, Login: "user", Password: "pw-Frotz-1"}
			begin := time.Now()
			res := n.Check(context.Background(), s, "en", c.timeout)
			elapsed := time.Since(begin)
			rep := res.Report
			if rep.OK || rep.Failed != c.wantFailed {
				t.Fatalf("Check() step = %q (OK %v), want %q; steps: %+v", rep.Failed, rep.OK, c.wantFailed, rep.Steps)
			}
			last := lastStep(rep)
			if last.Code != c.wantCode {
				t.Errorf("Check() code = %q, want %q (%s)", last.Code, c.wantCode, last.Explanation)
			}
			if c.wantText != "" && !strings.Contains(last.Explanation, c.wantText) {
				t.Errorf("Check() explanation = %q, want it to contain %q", last.Explanation, c.wantText)
			}
			if c.wantHint != "" && !strings.Contains(last.Hint, c.wantHint) {
				t.Errorf("Check() hint = %q, want it to contain %q", last.Hint, c.wantHint)
			}
			if c.timeout > 0 && elapsed > c.timeout+time.Second {
				t.Errorf("Check() took %v, want at most %v", elapsed, c.timeout+time.Second)
			}
			if rep.ElapsedMS > elapsed.Milliseconds()+1 {
				t.Errorf("Check() ElapsedMS = %d, want at most %d", rep.ElapsedMS, elapsed.Milliseconds())
			}
			assertNoSecret(t, res, nil, "pw-Frotz-1")
		})
	}
}

// TestCancelDuringStall: a cancelled context ends a check or a dial that
// waits for a silent server at once, not at its timeout.
func TestCancelDuringStall(t *testing.T) {
	port, accepted := stallServer(t)
	n, _ := testNetwork(x509.NewCertPool())
	s := IMAPSettings{Host: "127.0.0.1", Port: port, Security: outgoing.SecurityNone, Login: "user", Password: "pw"}

	cases := []struct {
		name string
		run  func(ctx context.Context) (outgoing.Step, string)
	}{
		{"check", func(ctx context.Context) (outgoing.Step, string) {
			rep := n.Check(ctx, s, "en", time.Minute).Report
			return rep.Failed, lastStep(rep).Code
		}},
		{"dial", func(ctx context.Context) (outgoing.Step, string) {
			_, err := n.Dial(ctx, s)
			var ie *IMAPError
			if !errors.As(err, &ie) {
				return "", "not an *IMAPError: " + errors.Unwrap(err).Error()
			}
			if !errors.Is(err, context.Canceled) {
				return ie.Step, "not canceled"
			}
			return ie.Step, outgoing.CodeCanceled
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			type result struct {
				step outgoing.Step
				code string
			}
			done := make(chan result, 1)
			go func() {
				step, code := c.run(ctx)
				done <- result{step, code}
			}()
			<-accepted
			begin := time.Now()
			cancel()
			select {
			case r := <-done:
				if r.code != outgoing.CodeCanceled || (r.step != StepGreeting && r.step != outgoing.StepTCP) {
					t.Errorf("%s() step, code = %q, %q, want %q, %q", c.name, r.step, r.code, StepGreeting, outgoing.CodeCanceled)
				}
				if d := time.Since(begin); d > 2*time.Second {
					t.Errorf("%s() returned %v after the cancel, want promptly", c.name, d)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s() still running 10 s after its context was cancelled", c.name)
			}
		})
	}
}

func TestDialStalledTimeout(t *testing.T) {
	port, _ := stallServer(t)
	n, _ := testNetwork(x509.NewCertPool())
	s := IMAPSettings{Host: "127.0.0.1", Port: port, Security: outgoing.SecurityNone, Login: "user", Password: "pw"}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := n.Dial(ctx, s)
	var ie *IMAPError
	if !errors.As(err, &ie) || ie.Step != StepGreeting || !ie.Timeout || !ie.Temporary() {
		t.Errorf("Dial() error = %v, want a temporary timeout at %q", err, StepGreeting)
	}
}

func TestCheckRussian(t *testing.T) {
	refused := freePort(t)
	n, _ := testNetwork(x509.NewCertPool())
	s := IMAPSettings{Host: "127.0.0.1", Port: refused, Security: outgoing.SecuritySSL, Login: "user", Password: "pw"}
	last := lastStep(n.Check(context.Background(), s, "ru-RU,ru;q=0.9", 0).Report)
	if last.Explanation != i18n.T(i18n.Ru, "explain.connection_refused") || last.Hint != i18n.T(i18n.Ru, "imap.hint.connection_refused") {
		t.Errorf("Check() in Russian explanation, hint = %q, %q, want the Russian texts", last.Explanation, last.Hint)
	}
}

func TestIMAPSettingsValidate(t *testing.T) {
	ok := IMAPSettings{Host: "imap.example.com", Port: 993, Security: outgoing.SecuritySSL, Login: "a@example.com", Password: "pw"}
	cases := []struct {
		name      string
		change    func(*IMAPSettings)
		wantField string // "" = valid
	}{
		{"valid", func(*IMAPSettings) {}, ""},
		{"IP literal", func(s *IMAPSettings) { s.Host = "192.0.2.1" }, ""},
		{"IPv6 literal", func(s *IMAPSettings) { s.Host = "2001:db8::1" }, ""},
		{"trailing dot", func(s *IMAPSettings) { s.Host = "imap.example.com." }, ""},
		{"no host", func(s *IMAPSettings) { s.Host = "" }, "imap.host"},
		{"host with port", func(s *IMAPSettings) { s.Host = "imap.example.com:993" }, "imap.host"},
		{"host with scheme", func(s *IMAPSettings) { s.Host = "imaps://imap.example.com" }, "imap.host"},
		{"host with space", func(s *IMAPSettings) { s.Host = "imap example.com" }, "imap.host"},
		{"bracketed IPv6", func(s *IMAPSettings) { s.Host = "[2001:db8::1]" }, "imap.host"},
		{"zoned IPv6", func(s *IMAPSettings) { s.Host = "fe80::1%eth0" }, "imap.host"},
		{"unicode host", func(s *IMAPSettings) { s.Host = "почта.рф" }, "imap.host"},
		{"numeric host", func(s *IMAPSettings) { s.Host = "993" }, "imap.host"},
		{"port 0", func(s *IMAPSettings) { s.Port = 0 }, "imap.port"},
		{"port too big", func(s *IMAPSettings) { s.Port = 65536 }, "imap.port"},
		{"bad security", func(s *IMAPSettings) { s.Security = "tls" }, "imap.security"},
		{"no login", func(s *IMAPSettings) { s.Login = "" }, "imap.login"},
		{"login with newline", func(s *IMAPSettings) { s.Login = "a\r\nb" }, "imap.login"},
		{"login too long", func(s *IMAPSettings) { s.Login = strings.Repeat("a", 321) }, "imap.login"},
		{"no password", func(s *IMAPSettings) { s.Password = "" }, "imap.password"},
		{"password with newline", func(s *IMAPSettings) { s.Password = "a\nb" }, "imap.password"},
		{"password with NUL", func(s *IMAPSettings) { s.Password = "a\x00b" }, "imap.password"},
		{"password too long", func(s *IMAPSettings) { s.Password = secret.Secret(strings.Repeat("a", 1025)) }, "imap.password"},
	}
	for _, c := range cases {
		s := ok
		c.change(&s)
		err := s.Validate("imap.")
		if c.wantField == "" {
			if err != nil {
				t.Errorf("%s: Validate() = %v, want nil", c.name, err)
			}
			continue
		}
		var field string
		if e, isApp := apperr.As(err); isApp && errors.Is(err, apperr.ErrInvalid) {
			field = e.Field
		}
		if field != c.wantField {
			t.Errorf("%s: Validate() field = %q (%v), want %q", c.name, field, err, c.wantField)
		}
		if err != nil && strings.Contains(err.Error(), s.Password.Reveal()) && s.Password != "" {
			t.Errorf("%s: Validate() = %q, contains the password", c.name, err)
		}
	}
}

func TestSentFolder(t *testing.T) {
	f := func(name, delim, use string) Folder { return Folder{Name: name, Delimiter: delim, SpecialUse: use} }
	noSelect := func(f Folder) Folder { f.NoSelect = true; return f }
	cases := []struct {
		name     string
		folders  []Folder
		fallback string
		want     string // "" = none
	}{
		{"none", []Folder{f("INBOX", "/", "")}, "", ""},
		{"empty list", nil, "Sent", ""},
		{"by attribute", []Folder{f("INBOX", "/", ""), f("Sent", "/", ""), f("Outgoing", "/", `\Sent`)}, "", "Outgoing"},
		{"attribute beats fallback", []Folder{f("[Gmail]/Sent Mail", "/", ""), f("[Gmail]/Отправленные", "/", `\Sent`)}, "[Gmail]/Sent Mail", "[Gmail]/Отправленные"},
		{"fallback", []Folder{f("INBOX", "/", ""), f("Sent", "/", ""), f("SentBox", "/", "")}, "SentBox", "SentBox"},
		{"fallback ignoring case", []Folder{f("sentbox", "/", "")}, "SentBox", "sentbox"},
		{"fallback exact first", []Folder{f("sentbox", "/", ""), f("SentBox", "/", "")}, "SentBox", "SentBox"},
		{"missing fallback, then names", []Folder{f("Sent", "/", "")}, "Gesendet", "Sent"},
		{"Sent Items", []Folder{f("INBOX", "/", ""), f("Sent Items", "/", "")}, "", "Sent Items"},
		{"Sent Messages", []Folder{f("Sent Messages", ".", "")}, "", "Sent Messages"},
		{"Russian", []Folder{f("INBOX", "|", ""), f("Отправленные", "|", "")}, "", "Отправленные"},
		{"Russian any case", []Folder{f("ОТПРАВЛЕННЫЕ", "|", "")}, "", "ОТПРАВЛЕННЫЕ"},
		{"any level", []Folder{f("INBOX", ".", ""), f("INBOX.Sent", ".", "")}, "", "INBOX.Sent"},
		{"shallowest first", []Folder{f("INBOX/Sent", "/", ""), f("sent", "/", "")}, "", "sent"},
		{"name priority", []Folder{f("Sent Items", "/", ""), f("Sent", "/", "")}, "", "Sent"},
		{"not a prefix", []Folder{f("Sentinel", "/", ""), f("Unsent", "/", "")}, "", ""},
		{"flat namespace", []Folder{f("a/Sent", "", "")}, "", ""},
		{"no-select skipped", []Folder{noSelect(f("Sent", "/", `\Sent`)), f("Sent Items", "/", "")}, "", "Sent Items"},
		{"no-select fallback skipped", []Folder{noSelect(f("SentBox", "/", ""))}, "SentBox", ""},
	}
	for _, c := range cases {
		got, ok := SentFolder(c.folders, c.fallback)
		if c.want == "" {
			if ok {
				t.Errorf("%s: SentFolder() = %q, want none", c.name, got.Name)
			}
			continue
		}
		if !ok || got.Name != c.want {
			t.Errorf("%s: SentFolder() = %q (%v), want %q", c.name, got.Name, ok, c.want)
		}
	}
}

func TestDefaultSyncFolders(t *testing.T) {
	cases := []struct {
		name     string
		folders  []Folder
		fallback string
		want     []string
	}{
		{"no sent", []Folder{{Name: "INBOX"}}, "", []string{"INBOX"}},
		{"nothing listed", nil, "", []string{"INBOX"}},
		{"special use", []Folder{{Name: "INBOX"}, {Name: "Sent", SpecialUse: `\Sent`}}, "", []string{"INBOX", "Sent"}},
		{"fallback", []Folder{{Name: "INBOX"}, {Name: "Отправленные"}}, "Отправленные", []string{"INBOX", "Отправленные"}},
		{"INBOX marked sent", []Folder{{Name: "INBOX", SpecialUse: `\Sent`}}, "", []string{"INBOX"}},
	}
	for _, c := range cases {
		if got := DefaultSyncFolders(c.folders, c.fallback); !slices.Equal(got, c.want) {
			t.Errorf("%s: DefaultSyncFolders() = %q, want %q", c.name, got, c.want)
		}
	}
}

func TestFolderOf(t *testing.T) {
	cases := []struct {
		data imap.ListData
		want Folder
	}{
		{imap.ListData{Mailbox: "INBOX", Delim: '/'}, Folder{Name: "INBOX", Delimiter: "/"}},
		{imap.ListData{Mailbox: "Sent", Delim: '.', Attrs: []imap.MailboxAttr{imap.MailboxAttrHasNoChildren, imap.MailboxAttrSent}}, Folder{Name: "Sent", Delimiter: ".", SpecialUse: `\Sent`}},
		{imap.ListData{Mailbox: "All", Attrs: []imap.MailboxAttr{imap.MailboxAttrAll, imap.MailboxAttrSent}}, Folder{Name: "All", SpecialUse: `\Sent`}},
		{imap.ListData{Mailbox: "[Gmail]", Delim: '/', Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}}, Folder{Name: "[Gmail]", Delimiter: "/", NoSelect: true}},
		{imap.ListData{Mailbox: "Gone", Attrs: []imap.MailboxAttr{imap.MailboxAttrNonExistent}}, Folder{Name: "Gone", NoSelect: true}},
		{imap.ListData{Mailbox: "Stars", Attrs: []imap.MailboxAttr{imap.MailboxAttrFlagged}}, Folder{Name: "Stars", SpecialUse: `\Flagged`}},
	}
	for _, c := range cases {
		if got := folderOf(&c.data); got != c.want {
			t.Errorf("folderOf(%+v) = %+v, want %+v", c.data, got, c.want)
		}
	}
}

func TestExplainIMAPReply(t *testing.T) {
	reply := func(text string) *outgoing.Reply { return &outgoing.Reply{Text: text} }
	cases := []struct {
		name     string
		host     string
		ie       IMAPError
		wantCode string
		wantHint string // in the hint
	}{
		{"refused login", "imap.example.com", IMAPError{Step: StepLogin, Code: "AUTHENTICATIONFAILED", Reply: reply("NO [AUTHENTICATIONFAILED] Authentication failed.")}, outgoing.CodeAuthRejected, "app password"},
		{"refused login at a preset", "IMAP.Yandex.ru.", IMAPError{Step: StepLogin, Code: "AUTHENTICATIONFAILED", Reply: reply("NO [AUTHENTICATIONFAILED] LOGIN Invalid credentials")}, outgoing.CodeAuthRejected, "Yandex"},
		{"gmail app password", "imap.gmail.com", IMAPError{Step: StepLogin, Code: "ALERT", Reply: reply("NO [ALERT] Application-specific password required: https://support.google.com/accounts/answer/185833 (Failure)")}, outgoing.CodeAppPasswordRequired, ""},
		{"gmail imap disabled", "imap.gmail.com", IMAPError{Step: StepLogin, Code: "ALERT", Reply: reply("NO [ALERT] Your account is not enabled for IMAP use.")}, CodeIMAPDisabled, ""},
		{"yandex imap disabled", "imap.yandex.ru", IMAPError{Step: StepLogin, Code: "AUTHENTICATIONFAILED", Reply: reply("NO [AUTHENTICATIONFAILED] This user does not have access rights to this service")}, CodeIMAPDisabled, ""},
		{"expired", "imap.example.com", IMAPError{Step: StepLogin, Code: "EXPIRED", Reply: reply("NO [EXPIRED] Password expired")}, CodePasswordExpired, ""},
		{"unavailable", "imap.example.com", IMAPError{Step: StepLogin, Code: "UNAVAILABLE", Reply: reply("NO [UNAVAILABLE] Try later")}, outgoing.CodeTemporaryFailure, ""},
		{"privacy required", "imap.example.com", IMAPError{Step: StepLogin, Code: "PRIVACYREQUIRED", Reply: reply("NO [PRIVACYREQUIRED] Use TLS")}, outgoing.CodeAuthNeedsTLS, ""},
		{"busy greeting", "imap.example.com", IMAPError{Step: StepGreeting, Reply: reply("* BYE Too many connections")}, outgoing.CodeRejected, ""},
		{"STARTTLS refused", "imap.example.com", IMAPError{Step: "starttls", Reply: reply("BAD Unknown command")}, outgoing.CodeSTARTTLSMissing, "993"},
		{"LIST refused", "imap.example.com", IMAPError{Step: StepList, Reply: reply("NO Server error")}, outgoing.CodeRejected, ""},
	}
	for _, c := range cases {
		code, explanation, hint := explainIMAP(i18n.En, c.host, &c.ie)
		if code != c.wantCode {
			t.Errorf("%s: explainIMAP() code = %q, want %q", c.name, code, c.wantCode)
		}
		if explanation == "" || hint == "" || strings.HasPrefix(explanation, "imap.") || strings.HasPrefix(hint, "imap.") {
			t.Errorf("%s: explainIMAP() explanation, hint = %q, %q, want catalogue texts", c.name, explanation, hint)
		}
		if c.wantHint != "" && !strings.Contains(hint, c.wantHint) {
			t.Errorf("%s: explainIMAP() hint = %q, want it to contain %q", c.name, hint, c.wantHint)
		}
		if _, ruExpl, ruHint := explainIMAP(i18n.Ru, c.host, &c.ie); ruExpl == explanation || ruHint == hint {
			t.Errorf("%s: explainIMAP(ru) = %q, %q, want Russian texts", c.name, ruExpl, ruHint)
		}
	}
}

func TestIMAPErrorTemporary(t *testing.T) {
	cases := []struct {
		name string
		err  *IMAPError
		want bool
	}{
		{"nil", nil, false},
		{"login refused", &IMAPError{Step: StepLogin, Code: "AUTHENTICATIONFAILED", Reply: &outgoing.Reply{Text: "NO"}}, false},
		{"unavailable", &IMAPError{Step: StepLogin, Code: "UNAVAILABLE", Reply: &outgoing.Reply{Text: "NO"}}, true},
		{"busy greeting", &IMAPError{Step: StepGreeting, Reply: &outgoing.Reply{Text: "* BYE"}}, true},
		{"timeout", &IMAPError{Step: StepList, Timeout: true}, true},
		{"reset", &IMAPError{Step: StepList, Err: errors.New("connection reset by peer")}, true},
		{"blocked", &IMAPError{Step: "dns", Err: &netguard.BlockedError{Host: "x", Class: netguard.ClassPrivate}}, false},
		{"no such host", &IMAPError{Step: "dns", Err: &net.DNSError{IsNotFound: true}}, false},
		{"login disabled", &IMAPError{Step: StepLogin, Err: ErrLoginDisabled}, false},
	}
	for _, c := range cases {
		if got := c.err.Temporary(); got != c.want {
			t.Errorf("%s: Temporary() = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestIMAPConn(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()

	// A limit in the past makes every read time out, whatever imapclient
	// asks for.
	ic := newIMAPConn(client, time.Now().Add(-time.Second))
	if err := ic.SetReadDeadline(time.Time{}); err != nil {
		t.Fatalf("SetReadDeadline() error = %v", err)
	}
	if _, err := ic.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read() under a past limit error = %v, want %v", err, os.ErrDeadlineExceeded)
	}

	// Without the limit, the deadline asked for holds again; the first
	// line is kept across reads.
	if err := ic.setLimit(time.Time{}); err != nil {
		t.Fatalf("setLimit() error = %v", err)
	}
	go func() {
		_, _ = server.Write([]byte("* OK [CAPABILITY IMAP4rev1] ready"))
		_, _ = server.Write([]byte("\r\nA1 OK more\r\n"))
	}()
	var got []byte
	buf := make([]byte, 7)
	for !bytes.Contains(got, []byte("more\r\n")) {
		n, err := ic.Read(buf)
		if err != nil {
			t.Fatalf("Read() error = %v", err)
		}
		got = append(got, buf[:n]...)
	}
	line, complete, _ := ic.greeting()
	if line != "* OK [CAPABILITY IMAP4rev1] ready" || !complete {
		t.Errorf("greeting() = %q, %v, want %q, true", line, complete, "* OK [CAPABILITY IMAP4rev1] ready")
	}
}

func TestEarlier(t *testing.T) {
	a := time.Unix(100, 0)
	b := time.Unix(200, 0)
	cases := []struct{ x, y, want time.Time }{
		{time.Time{}, time.Time{}, time.Time{}},
		{a, time.Time{}, a},
		{time.Time{}, b, b},
		{a, b, a},
		{b, a, a},
	}
	for _, c := range cases {
		if got := earlier(c.x, c.y); !got.Equal(c.want) {
			t.Errorf("earlier(%v, %v) = %v, want %v", c.x, c.y, got, c.want)
		}
	}
}
