package testpeer_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailsync/mailsync/internal/testpeer"
)

const (
	smtpTestUser = "alice@example.org"
	smtpTestPass = "correct horse battery staple"
	smtpTestBody = "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nHello, Bob.\r\n"
)

// smtpTestGuard bounds waits that should end almost at once, so that a bug
// fails the test instead of hanging it.
const smtpTestGuard = 10 * time.Second

// smtpStart starts a peer in mode with one user and a CA-issued certificate.
func smtpStart(t *testing.T, mode testpeer.SMTPMode, script *testpeer.SMTPScript) (*testpeer.SMTPServer, *testpeer.CA) {
	t.Helper()
	ca := testpeer.NewCA(t)
	s := testpeer.StartSMTP(t, &testpeer.SMTPOptions{
		Mode:   mode,
		TLS:    ca.ServerTLS(t),
		Users:  map[string]string{smtpTestUser: smtpTestPass},
		Script: script,
	})
	return s, ca
}

// smtpDial connects a go-smtp client the way mode requires, verifying the
// server certificate against ca.
func smtpDial(t *testing.T, s *testpeer.SMTPServer, mode testpeer.SMTPMode, ca *testpeer.CA) *smtp.Client {
	t.Helper()
	var (
		c   *smtp.Client
		err error
	)
	switch mode {
	case testpeer.SMTPPlain:
		c, err = smtp.Dial(s.Addr())
	case testpeer.SMTPStartTLS:
		c, err = smtp.DialStartTLS(s.Addr(), ca.ClientTLS("localhost"))
	case testpeer.SMTPImplicitTLS:
		c, err = smtp.DialTLS(s.Addr(), ca.ClientTLS("localhost"))
	}
	if err != nil {
		t.Fatalf("dial %v %s: %v", mode, s.Addr(), err)
	}
	c.CommandTimeout = smtpTestGuard
	c.SubmissionTimeout = smtpTestGuard
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// smtpSendAs authenticates with PLAIN and sends one message, returning the
// first error and the step that produced it.
func smtpSendAs(c *smtp.Client, login, password string) (step string, err error) {
	if err := c.Auth(sasl.NewPlainClient("", login, password)); err != nil {
		return "auth", err
	}
	return smtpSend(c)
}

func smtpSend(c *smtp.Client) (step string, err error) {
	if err := c.Mail(smtpTestUser, nil); err != nil {
		return "mail", err
	}
	if err := c.Rcpt("bob@example.net", nil); err != nil {
		return "rcpt", err
	}
	w, err := c.Data()
	if err != nil {
		return "data", err
	}
	if _, err := w.Write([]byte(smtpTestBody)); err != nil {
		return "data", err
	}
	if err := w.Close(); err != nil {
		return "data", err
	}
	return "", nil
}

func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// saslNoIR wraps PLAIN or LOGIN so that AUTH carries no initial response and
// the server has to prompt.
type saslNoIR struct {
	mech, login, password string
}

func (a saslNoIR) Start() (string, []byte, error) { return a.mech, nil, nil }

func (a saslNoIR) Next(challenge []byte) ([]byte, error) {
	switch {
	case a.mech == sasl.Plain:
		return []byte("\x00" + a.login + "\x00" + a.password), nil
	case string(challenge) == "Username:":
		return []byte(a.login), nil
	case string(challenge) == "Password:":
		return []byte(a.password), nil
	}
	return nil, errors.New("unexpected challenge " + string(challenge))
}

func TestSMTPDeliversInEveryMode(t *testing.T) {
	t.Parallel()
	auths := map[string]func() sasl.Client{
		"PLAIN":       func() sasl.Client { return sasl.NewPlainClient("", smtpTestUser, smtpTestPass) },
		"PLAIN no IR": func() sasl.Client { return saslNoIR{sasl.Plain, smtpTestUser, smtpTestPass} },
		"LOGIN":       func() sasl.Client { return sasl.NewLoginClient(smtpTestUser, smtpTestPass) },
		"LOGIN no IR": func() sasl.Client { return saslNoIR{sasl.Login, smtpTestUser, smtpTestPass} },
	}
	for _, mode := range []testpeer.SMTPMode{testpeer.SMTPPlain, testpeer.SMTPStartTLS, testpeer.SMTPImplicitTLS} {
		for name, newAuth := range auths {
			t.Run(mode.String()+"/"+name, func(t *testing.T) {
				t.Parallel()
				s, ca := smtpStart(t, mode, nil)
				c := smtpDial(t, s, mode, ca)
				if err := c.Auth(newAuth()); err != nil {
					t.Fatalf("Auth() = %v, want nil", err)
				}
				if step, err := smtpSend(c); err != nil {
					t.Fatalf("send: %s: %v", step, err)
				}
				if err := c.Quit(); err != nil {
					t.Fatalf("Quit() = %v", err)
				}

				wantTLS := mode != testpeer.SMTPPlain
				msgs := s.Messages()
				if len(msgs) != 1 {
					t.Fatalf("Messages() has %d messages, want 1", len(msgs))
				}
				m := msgs[0]
				if m.From != smtpTestUser || len(m.To) != 1 || m.To[0] != "bob@example.net" {
					t.Errorf("envelope = %q → %q, want %q → [bob@example.net]", m.From, m.To, smtpTestUser)
				}
				if string(m.Data) != smtpTestBody {
					t.Errorf("Data = %q, want %q", m.Data, smtpTestBody)
				}
				if m.TLS != wantTLS || m.AuthUser != smtpTestUser || m.ConnID != 1 {
					t.Errorf("message TLS, AuthUser, ConnID = %v, %q, %d, want %v, %q, 1", m.TLS, m.AuthUser, m.ConnID, wantTLS, smtpTestUser)
				}

				if got := s.Conns(); got != 1 {
					t.Errorf("Conns() = %d, want 1", got)
				}
				sess := s.Sessions()
				if len(sess) != 1 {
					t.Fatalf("Sessions() has %d sessions, want 1", len(sess))
				}
				if sess[0].ID != 1 || sess[0].TLS != wantTLS || sess[0].Hello != "localhost" {
					t.Errorf("session ID, TLS, Hello = %d, %v, %q, want 1, %v, localhost", sess[0].ID, sess[0].TLS, sess[0].Hello, wantTLS)
				}
				if wantTLS && (sess[0].TLSVersion < tls.VersionTLS12 || sess[0].ServerName != "localhost") {
					t.Errorf("session TLSVersion, ServerName = %x, %q, want ≥ TLS 1.2, localhost", sess[0].TLSVersion, sess[0].ServerName)
				}
				mech, _, _ := strings.Cut(name, " ")
				want := testpeer.SMTPAuth{Mechanism: mech, Login: smtpTestUser, TLS: wantTLS, OK: true}
				if len(sess[0].Auths) != 1 || sess[0].Auths[0] != want {
					t.Errorf("session Auths = %+v, want [%+v]", sess[0].Auths, want)
				}
			})
		}
	}
}

func TestSMTPScriptRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		script   testpeer.SMTPScript
		password string
		wantStep string
		wantCode int
	}{
		{
			name:     "535 at AUTH by script",
			script:   testpeer.SMTPScript{Auth: func(int, string, string) error { return testpeer.SMTPReply(535, "5.7.8", "Bad") }},
			password: smtpTestPass,
			wantStep: "auth", wantCode: 535,
		},
		{
			name:     "535 at AUTH for a wrong password",
			password: "wrong",
			wantStep: "auth", wantCode: 535,
		},
		{
			name:     "553 at MAIL FROM",
			script:   testpeer.SMTPScript{Mail: func(int, string) error { return testpeer.SMTPReply(553, "5.7.1", "Sender address rejected") }},
			password: smtpTestPass,
			wantStep: "mail", wantCode: 553,
		},
		{
			name:     "550 at RCPT TO",
			script:   testpeer.SMTPScript{Rcpt: func(int, string) error { return testpeer.SMTPReply(550, "5.1.1", "No such user") }},
			password: smtpTestPass,
			wantStep: "rcpt", wantCode: 550,
		},
		{
			name:     "554 after DATA",
			script:   testpeer.SMTPScript{Data: func(int, []byte) error { return testpeer.SMTPReply(554, "5.6.0", "Message rejected") }},
			password: smtpTestPass,
			wantStep: "data", wantCode: 554,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, ca := smtpStart(t, testpeer.SMTPStartTLS, &tt.script)
			c := smtpDial(t, s, testpeer.SMTPStartTLS, ca)
			step, err := smtpSendAs(c, smtpTestUser, tt.password)
			if step != tt.wantStep || smtpCode(err) != tt.wantCode {
				t.Fatalf("send failed at step %q with %v (code %d), want step %q code %d", step, err, smtpCode(err), tt.wantStep, tt.wantCode)
			}
			if got := len(s.Messages()); got != 0 {
				t.Errorf("Messages() has %d messages, want 0", got)
			}
		})
	}
}

func TestSMTPRequiresAuthBeforeMail(t *testing.T) {
	t.Parallel()
	s, ca := smtpStart(t, testpeer.SMTPImplicitTLS, nil)
	c := smtpDial(t, s, testpeer.SMTPImplicitTLS, ca)
	step, err := smtpSend(c)
	if step != "mail" || smtpCode(err) != 530 {
		t.Fatalf("send without AUTH failed at %q with %v, want mail and 530", step, err)
	}
}

func TestSMTPNoUsersNoAuth(t *testing.T) {
	t.Parallel()
	s := testpeer.StartSMTP(t, nil)
	c := smtpDial(t, s, testpeer.SMTPPlain, nil)
	if err := c.Hello("localhost"); err != nil {
		t.Fatalf("Hello() = %v", err)
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Errorf("AUTH offered without users")
	}
	if step, err := smtpSend(c); err != nil {
		t.Fatalf("send: %s: %v", step, err)
	}
	if msgs := s.Messages(); len(msgs) != 1 || msgs[0].TLS || msgs[0].AuthUser != "" {
		t.Errorf("Messages() = %+v, want one message without TLS or AUTH", msgs)
	}
}

func TestSMTPTempFailThenAccept(t *testing.T) {
	t.Parallel()
	s, ca := smtpStart(t, testpeer.SMTPStartTLS, &testpeer.SMTPScript{
		Mail: func(n int, _ string) error {
			if n == 1 {
				return testpeer.SMTPReply(451, "4.3.0", "Try again later")
			}
			return nil
		},
	})
	c1 := smtpDial(t, s, testpeer.SMTPStartTLS, ca)
	if step, err := smtpSendAs(c1, smtpTestUser, smtpTestPass); step != "mail" || smtpCode(err) != 451 {
		t.Fatalf("first send failed at %q with %v, want mail and 451", step, err)
	}
	c2 := smtpDial(t, s, testpeer.SMTPStartTLS, ca)
	if step, err := smtpSendAs(c2, smtpTestUser, smtpTestPass); err != nil {
		t.Fatalf("second send: %s: %v", step, err)
	}
	msgs := s.Messages()
	if len(msgs) != 1 || msgs[0].ConnID != 2 {
		t.Fatalf("Messages() = %+v, want one message on connection 2", msgs)
	}
	if got := s.Conns(); got != 2 {
		t.Errorf("Conns() = %d, want 2", got)
	}
}

func TestSMTPDropAfterData(t *testing.T) {
	t.Parallel()
	s, ca := smtpStart(t, testpeer.SMTPImplicitTLS, &testpeer.SMTPScript{
		DropAfterData: func(n int) bool { return n == 1 },
	})
	c1 := smtpDial(t, s, testpeer.SMTPImplicitTLS, ca)
	step, err := smtpSendAs(c1, smtpTestUser, smtpTestPass)
	if step != "data" || err == nil || smtpCode(err) != 0 {
		t.Fatalf("send failed at %q with %v (code %d), want a connection error at data without a reply", step, err, smtpCode(err))
	}
	if got := len(s.Messages()); got != 0 {
		t.Errorf("Messages() has %d messages after a drop, want 0", got)
	}
	if sess := s.Sessions(); !sess[0].Closed {
		t.Errorf("session 1 Closed = false after a drop, want true")
	}

	c2 := smtpDial(t, s, testpeer.SMTPImplicitTLS, ca)
	if step, err := smtpSendAs(c2, smtpTestUser, smtpTestPass); err != nil {
		t.Fatalf("second send: %s: %v", step, err)
	}
	if msgs := s.Messages(); len(msgs) != 1 || msgs[0].ConnID != 2 {
		t.Fatalf("Messages() = %+v, want one message on connection 2", msgs)
	}
}

// closePromptly calls s.Close and fails if it does not return within the
// guard.
func closePromptly(t *testing.T, s *testpeer.SMTPServer) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		s.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(smtpTestGuard):
		t.Fatalf("Close() did not return within %v", smtpTestGuard)
	}
}

func waitStalled(t *testing.T, s *testpeer.SMTPServer) {
	t.Helper()
	select {
	case <-s.Stalled():
	case <-time.After(smtpTestGuard):
		t.Fatalf("server did not reach its stall within %v", smtpTestGuard)
	}
}

func TestSMTPStallGreeting(t *testing.T) {
	t.Parallel()
	t.Run("plain", func(t *testing.T) {
		t.Parallel()
		s, _ := smtpStart(t, testpeer.SMTPPlain, &testpeer.SMTPScript{StallAt: testpeer.SMTPStageGreeting})
		conn, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c := smtp.NewClient(conn)
		defer c.Close()
		c.CommandTimeout = 100 * time.Millisecond
		if err := c.Hello("localhost"); !isTimeout(err) {
			t.Fatalf("Hello() = %v, want a timeout", err)
		}
		waitStalled(t, s)
		closePromptly(t, s)
		if got := s.Conns(); got != 1 {
			t.Errorf("Conns() = %d, want 1", got)
		}
	})
	t.Run("implicit TLS", func(t *testing.T) {
		t.Parallel()
		s, ca := smtpStart(t, testpeer.SMTPImplicitTLS, &testpeer.SMTPScript{StallAt: testpeer.SMTPStageGreeting})
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		d := tls.Dialer{Config: ca.ClientTLS("localhost")}
		if conn, err := d.DialContext(ctx, "tcp", s.Addr()); err == nil {
			conn.Close()
			t.Fatalf("TLS handshake succeeded, want it to hang until the deadline")
		}
		waitStalled(t, s)
		closePromptly(t, s)
		if sess := s.Sessions(); len(sess) != 1 || sess[0].TLS {
			t.Errorf("Sessions() = %+v, want one session without TLS", sess)
		}
	})
}

func TestSMTPStallTimesOutClient(t *testing.T) {
	t.Parallel()
	for _, stage := range []testpeer.SMTPStage{testpeer.SMTPStageEHLO, testpeer.SMTPStageAuth, testpeer.SMTPStageMail, testpeer.SMTPStageRcpt, testpeer.SMTPStageData} {
		t.Run(string(stage), func(t *testing.T) {
			t.Parallel()
			s, _ := smtpStart(t, testpeer.SMTPPlain, &testpeer.SMTPScript{StallAt: stage})
			c, err := smtp.Dial(s.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.CommandTimeout = 100 * time.Millisecond
			c.SubmissionTimeout = 100 * time.Millisecond
			step, err := smtpSendAs(c, smtpTestUser, smtpTestPass)
			if step == "" || !isTimeout(err) {
				t.Fatalf("send failed at %q with %v, want a timeout", step, err)
			}
			waitStalled(t, s)
			closePromptly(t, s)
			if got := len(s.Messages()); got != 0 {
				t.Errorf("Messages() has %d messages, want 0", got)
			}
		})
	}
}

func TestSMTPRelease(t *testing.T) {
	t.Parallel()
	s, ca := smtpStart(t, testpeer.SMTPStartTLS, &testpeer.SMTPScript{StallAt: testpeer.SMTPStageData})
	c := smtpDial(t, s, testpeer.SMTPStartTLS, ca)
	errc := make(chan error, 1)
	go func() {
		_, err := smtpSendAs(c, smtpTestUser, smtpTestPass)
		errc <- err
	}()
	waitStalled(t, s)
	select {
	case err := <-errc:
		t.Fatalf("send returned %v while the server stalled", err)
	default:
	}
	s.Release()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("send after Release() = %v, want nil", err)
		}
	case <-time.After(smtpTestGuard):
		t.Fatalf("send did not finish after Release()")
	}
	if got := len(s.Messages()); got != 1 {
		t.Errorf("Messages() has %d messages, want 1", got)
	}
}

func TestSMTPTranscript(t *testing.T) {
	t.Parallel()
	plainBlob := base64.StdEncoding.EncodeToString([]byte("\x00" + smtpTestUser + "\x00" + smtpTestPass))

	t.Run("plain server sees AUTH in clear", func(t *testing.T) {
		t.Parallel()
		s, ca := smtpStart(t, testpeer.SMTPPlain, nil)
		c := smtpDial(t, s, testpeer.SMTPPlain, ca)
		if step, err := smtpSendAs(c, smtpTestUser, smtpTestPass); err != nil {
			t.Fatalf("send: %s: %v", step, err)
		}
		tr := s.Sessions()[0].Transcript
		for _, want := range []string{"EHLO localhost\r\n", "AUTH PLAIN " + plainBlob + "\r\n", "MAIL FROM:<" + smtpTestUser + ">", "\r\n.\r\n"} {
			if !bytes.Contains(tr, []byte(want)) {
				t.Errorf("transcript lacks %q:\n%s", want, tr)
			}
		}
	})

	t.Run("STARTTLS hides credentials", func(t *testing.T) {
		t.Parallel()
		s, ca := smtpStart(t, testpeer.SMTPStartTLS, nil)
		c := smtpDial(t, s, testpeer.SMTPStartTLS, ca)
		if step, err := smtpSendAs(c, smtpTestUser, smtpTestPass); err != nil {
			t.Fatalf("send: %s: %v", step, err)
		}
		sess := s.Sessions()[0]
		if !bytes.Contains(sess.Transcript, []byte("STARTTLS\r\n")) {
			t.Errorf("transcript lacks STARTTLS")
		}
		for _, secret := range []string{"AUTH", smtpTestPass, plainBlob, smtpTestUser} {
			if bytes.Contains(sess.Transcript, []byte(secret)) {
				t.Errorf("transcript contains %q in clear text", secret)
			}
		}
		if len(sess.Auths) != 1 || !sess.Auths[0].TLS {
			t.Errorf("Auths = %+v, want one under TLS", sess.Auths)
		}
	})

	t.Run("AUTH before STARTTLS is refused but recorded", func(t *testing.T) {
		t.Parallel()
		s, _ := smtpStart(t, testpeer.SMTPStartTLS, nil)
		c := smtpDial(t, s, testpeer.SMTPPlain, nil) // never upgrades
		if err := c.Hello("localhost"); err != nil {
			t.Fatalf("Hello() = %v", err)
		}
		if ok, _ := c.Extension("AUTH"); ok {
			t.Errorf("AUTH offered before STARTTLS")
		}
		if err := c.Auth(sasl.NewPlainClient("", smtpTestUser, smtpTestPass)); smtpCode(err) != 523 {
			t.Errorf("Auth() before STARTTLS = %v, want code 523", err)
		}
		if tr := s.Sessions()[0].Transcript; !bytes.Contains(tr, []byte("AUTH PLAIN "+plainBlob)) {
			t.Errorf("transcript lacks the clear-text AUTH:\n%s", tr)
		}
	})

	t.Run("AllowInsecureAuth offers AUTH before STARTTLS", func(t *testing.T) {
		t.Parallel()
		ca := testpeer.NewCA(t)
		s := testpeer.StartSMTP(t, &testpeer.SMTPOptions{
			Mode: testpeer.SMTPStartTLS, TLS: ca.ServerTLS(t),
			Users:             map[string]string{smtpTestUser: smtpTestPass},
			AllowInsecureAuth: true,
		})
		c := smtpDial(t, s, testpeer.SMTPPlain, nil)
		if err := c.Hello("localhost"); err != nil {
			t.Fatalf("Hello() = %v", err)
		}
		if ok, _ := c.Extension("STARTTLS"); !ok {
			t.Errorf("STARTTLS not offered")
		}
		if ok, mechs := c.Extension("AUTH"); !ok || mechs != "PLAIN LOGIN" {
			t.Errorf("Extension(AUTH) = %v, %q, want true, \"PLAIN LOGIN\"", ok, mechs)
		}
	})
}

func TestSMTPSetPassword(t *testing.T) {
	t.Parallel()
	s, ca := smtpStart(t, testpeer.SMTPStartTLS, nil)
	c1 := smtpDial(t, s, testpeer.SMTPStartTLS, ca)
	if step, err := smtpSendAs(c1, smtpTestUser, smtpTestPass); err != nil {
		t.Fatalf("send with the first password: %s: %v", step, err)
	}
	s.SetPassword(smtpTestUser, "new password")
	c2 := smtpDial(t, s, testpeer.SMTPStartTLS, ca)
	if step, err := smtpSendAs(c2, smtpTestUser, smtpTestPass); step != "auth" || smtpCode(err) != 535 {
		t.Fatalf("send with the old password failed at %q with %v, want auth and 535", step, err)
	}
	c3 := smtpDial(t, s, testpeer.SMTPStartTLS, ca)
	if step, err := smtpSendAs(c3, smtpTestUser, "new password"); err != nil {
		t.Fatalf("send with the new password: %s: %v", step, err)
	}
	var oks []bool
	for _, sess := range s.Sessions() {
		for _, a := range sess.Auths {
			oks = append(oks, a.OK)
		}
	}
	if want := []bool{true, false, true}; len(oks) != 3 || oks[0] != want[0] || oks[1] != want[1] || oks[2] != want[2] {
		t.Errorf("AUTH outcomes = %v, want %v", oks, want)
	}
}

func TestSMTPConnsAndWaitMessages(t *testing.T) {
	t.Parallel()
	s, ca := smtpStart(t, testpeer.SMTPImplicitTLS, nil)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.WaitMessages(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitMessages(cancelled, 1) = %v, want context.Canceled", err)
	}

	const n = 3
	clients := make([]*smtp.Client, n)
	for i := range clients {
		clients[i] = smtpDial(t, s, testpeer.SMTPImplicitTLS, ca)
	}
	errc := make(chan error, n)
	for _, c := range clients {
		go func() {
			_, err := smtpSendAs(c, smtpTestUser, smtpTestPass)
			errc <- err
		}()
	}
	ctx, cancel = context.WithTimeout(t.Context(), smtpTestGuard)
	defer cancel()
	msgs, err := s.WaitMessages(ctx, n)
	if err != nil {
		t.Fatalf("WaitMessages(%d) = %v", n, err)
	}
	for range n {
		if err := <-errc; err != nil {
			t.Errorf("send: %v", err)
		}
	}
	seen := map[int]bool{}
	for _, m := range msgs {
		seen[m.ConnID] = true
	}
	if len(msgs) != n || len(seen) != n {
		t.Errorf("WaitMessages() = %d messages on %d connections, want %d on %d", len(msgs), len(seen), n, n)
	}
	if got := s.Conns(); got != n {
		t.Errorf("Conns() = %d, want %d", got, n)
	}
	for i, sess := range s.Sessions() {
		if sess.ID != i+1 {
			t.Errorf("Sessions()[%d].ID = %d, want %d", i, sess.ID, i+1)
		}
	}
}

func TestSMTPMaxMessageBytes(t *testing.T) {
	t.Parallel()
	s := testpeer.StartSMTP(t, &testpeer.SMTPOptions{MaxMessageBytes: 32})
	c := smtpDial(t, s, testpeer.SMTPPlain, nil)
	if step, err := smtpSend(c); step != "data" || smtpCode(err) != 552 {
		t.Fatalf("send of %d bytes failed at %q with %v, want data and 552", len(smtpTestBody), step, err)
	}
}

func TestSMTPReply(t *testing.T) {
	t.Parallel()
	got := testpeer.SMTPReply(451, "4.3.0", "later")
	want := &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"}
	if *got != *want {
		t.Errorf("SMTPReply() = %+v, want %+v", got, want)
	}
}
