package outgoing_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/i18n"
	"github.com/mailsync/mailsync/internal/netguard"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/outgoing"
)

const (
	scUser      = "alice@example.org"
	scPass      = "Tr0ub4dor&3-horse"
	scRcpt      = "bob@example.net"
	scTimeout   = 300 * time.Millisecond // for checks that are meant to time out
	scGuard     = 10 * time.Second       // bounds waits that should end at once
	scNamedHost = "mx.test.example"
)

// scResolver answers from a table; other names do not exist.
type scResolver map[string][]netip.Addr

func (r scResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := r[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// scLoopback allows the test peers' address only.
var scLoopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}

// scPeer starts a peer with one user and a certificate for localhost,
// 127.0.0.1 and scNamedHost.
func scPeer(t *testing.T, mode testpeer.SMTPMode, script *testpeer.SMTPScript) (*testpeer.SMTPServer, *testpeer.CA) {
	t.Helper()
	ca := testpeer.NewCA(t)
	s := testpeer.StartSMTP(t, &testpeer.SMTPOptions{
		Mode:   mode,
		TLS:    ca.ServerTLS(t, "localhost", "127.0.0.1", scNamedHost),
		Users:  map[string]string{scUser: scPass},
		Script: script,
	})
	return s, ca
}

// scNetwork is a Network that reaches the peers on 127.0.0.1, trusts ca and
// logs into log (which may be nil).
func scNetwork(ca *testpeer.CA, log io.Writer) *outgoing.Network {
	n := &outgoing.Network{
		Dialer: &netguard.Dialer{
			Allow:    scLoopback,
			Resolver: scResolver{scNamedHost: {netip.MustParseAddr("127.0.0.1")}},
		},
		HelloName: "mailsync.test",
	}
	if ca != nil {
		n.RootCAs = ca.Pool()
	}
	if log != nil {
		n.Logger = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return n
}

func scSettings(s *testpeer.SMTPServer, sec outgoing.Security) outgoing.Settings {
	return outgoing.Settings{
		Host: scNamedHost, Port: s.Port(), Security: sec,
		Auth: outgoing.AuthLogin, Login: scUser, Password: secret.Secret(scPass),
	}
}

func scModeFor(sec outgoing.Security) testpeer.SMTPMode {
	switch sec {
	case outgoing.SecuritySSL:
		return testpeer.SMTPImplicitTLS
	case outgoing.SecuritySTARTTLS:
		return testpeer.SMTPStartTLS
	}
	return testpeer.SMTPPlain
}

func scSteps(rep outgoing.Report) []outgoing.Step {
	out := make([]outgoing.Step, len(rep.Steps))
	for i, s := range rep.Steps {
		out[i] = s.Step
	}
	return out
}

func scLast(rep outgoing.Report) outgoing.StepResult {
	if len(rep.Steps) == 0 {
		return outgoing.StepResult{}
	}
	return rep.Steps[len(rep.Steps)-1]
}

// scNoPassword fails when any form of the password shows in b.
func scNoPassword(t *testing.T, what string, b []byte) {
	t.Helper()
	for _, form := range []string{
		scPass,
		base64.StdEncoding.EncodeToString([]byte(scPass)),
		base64.StdEncoding.EncodeToString([]byte("\x00" + scUser + "\x00" + scPass)),
	} {
		if bytes.Contains(b, []byte(form)) {
			t.Errorf("%s contains the password (as %q)", what, form)
		}
	}
}

var (
	stepsSSL      = []outgoing.Step{outgoing.StepDNS, outgoing.StepTCP, outgoing.StepTLS, outgoing.StepEHLO, outgoing.StepAuth, outgoing.StepMailFrom, outgoing.StepRcpt}
	stepsSTARTTLS = []outgoing.Step{outgoing.StepDNS, outgoing.StepTCP, outgoing.StepEHLO, outgoing.StepSTARTTLS, outgoing.StepAuth, outgoing.StepMailFrom, outgoing.StepRcpt}
	stepsPlain    = []outgoing.Step{outgoing.StepDNS, outgoing.StepTCP, outgoing.StepEHLO, outgoing.StepAuth, outgoing.StepMailFrom, outgoing.StepRcpt}
)

func TestCheckSucceedsOverEachSecurity(t *testing.T) {
	cases := []struct {
		name      string
		sec       outgoing.Security
		auth      outgoing.AuthMethod
		mechs     []string
		wantSteps []outgoing.Step
		wantMech  string
	}{
		{"ssl", outgoing.SecuritySSL, outgoing.AuthLogin, nil, stepsSSL, "PLAIN"},
		{"starttls", outgoing.SecuritySTARTTLS, outgoing.AuthLogin, nil, stepsSTARTTLS, "PLAIN"},
		{"starttls with LOGIN only", outgoing.SecuritySTARTTLS, outgoing.AuthLogin, []string{"LOGIN"}, stepsSTARTTLS, "LOGIN"},
		{"none with login", outgoing.SecurityNone, outgoing.AuthLogin, nil, stepsPlain, "PLAIN"},
		{"none without login", outgoing.SecurityNone, outgoing.AuthNone, nil,
			[]outgoing.Step{outgoing.StepDNS, outgoing.StepTCP, outgoing.StepEHLO, outgoing.StepMailFrom, outgoing.StepRcpt}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ca := testpeer.NewCA(t)
			users := map[string]string{scUser: scPass}
			if c.auth == outgoing.AuthNone {
				users = nil
			}
			s := testpeer.StartSMTP(t, &testpeer.SMTPOptions{
				Mode: scModeFor(c.sec), TLS: ca.ServerTLS(t, scNamedHost), Users: users, AuthMechs: c.mechs,
			})
			set := scSettings(s, c.sec)
			if c.auth == outgoing.AuthNone {
				set.Auth, set.Login, set.Password = outgoing.AuthNone, "", ""
			}
			var log bytes.Buffer
			rep := scNetwork(ca, &log).Check(context.Background(), outgoing.CheckRequest{
				Settings: set, From: scUser, Rcpt: scRcpt, Lang: "en", Timeout: scGuard,
			})
			if !rep.OK || rep.Failed != "" {
				t.Fatalf("Check() ok = %v, failed step = %q (%+v), want ok", rep.OK, rep.Failed, scLast(rep))
			}
			if got := scSteps(rep); !slices.Equal(got, c.wantSteps) {
				t.Errorf("Check() steps = %v, want %v", got, c.wantSteps)
			}
			for _, st := range rep.Steps {
				if !st.OK || st.Code != "" || st.Explanation != "" {
					t.Errorf("Check() step %q = %+v, want ok without explanation", st.Step, st)
				}
			}
			sessions := s.Sessions()
			if len(sessions) != 1 {
				t.Fatalf("peer sessions = %d, want 1", len(sessions))
			}
			sess := sessions[0]
			if want := c.sec != outgoing.SecurityNone; sess.TLS != want {
				t.Errorf("peer session TLS = %v, want %v", sess.TLS, want)
			}
			if sess.TLS && sess.ServerName != scNamedHost {
				t.Errorf("peer saw SNI %q, want %q", sess.ServerName, scNamedHost)
			}
			if sess.Hello != "mailsync.test" {
				t.Errorf("peer saw EHLO %q, want %q", sess.Hello, "mailsync.test")
			}
			if c.wantMech == "" {
				if len(sess.Auths) != 0 {
					t.Errorf("peer saw AUTH %+v, want none", sess.Auths)
				}
			} else {
				want := []testpeer.SMTPAuth{{Mechanism: c.wantMech, Login: scUser, TLS: sess.TLS, OK: true}}
				if !slices.Equal(sess.Auths, want) {
					t.Errorf("peer saw AUTH %+v, want %+v", sess.Auths, want)
				}
				auth := rep.Steps[slices.Index(scSteps(rep), outgoing.StepAuth)]
				if !strings.Contains(auth.Detail, "used: "+c.wantMech) || auth.Reply == nil || auth.Reply.Code != 235 {
					t.Errorf("Check() auth step = %+v, want detail naming %s and reply 235", auth, c.wantMech)
				}
			}
			// The peer closes its side asynchronously after QUIT, so only
			// the clear-text transcript can show the QUIT itself.
			if !sess.TLS && !bytes.Contains(sess.Transcript, []byte("RSET\r\nQUIT\r\n")) {
				t.Errorf("peer transcript = %q, want it to end with RSET and QUIT", sess.Transcript)
			}
			if n := len(s.Messages()); n != 0 {
				t.Errorf("peer messages = %d, want 0 without a test recipient", n)
			}
			js, _ := json.Marshal(rep)
			scNoPassword(t, "report", js)
			scNoPassword(t, "log", log.Bytes())
		})
	}
}

func TestCheckFailsAtStep(t *testing.T) {
	cases := []struct {
		name      string
		sec       outgoing.Security
		script    *testpeer.SMTPScript
		edit      func(*outgoing.Settings)
		wantStep  outgoing.Step
		wantCode  string
		wantReply int
		wantText  []string // in the explanation
	}{
		{
			name: "wrong password", sec: outgoing.SecuritySSL,
			edit:     func(s *outgoing.Settings) { s.Password = "wrong password" },
			wantStep: outgoing.StepAuth, wantCode: "auth_rejected", wantReply: 535,
			wantText: []string{"login or password"},
		},
		{
			name: "gmail app password", sec: outgoing.SecuritySTARTTLS,
			script: &testpeer.SMTPScript{Auth: func(int, string, string) error {
				return testpeer.SMTPReply(534, "5.7.9", "Application-specific password required. Learn more at https://support.google.com/mail/?p=InvalidSecondFactor")
			}},
			wantStep: outgoing.StepAuth, wantCode: "app_password_required", wantReply: 534,
			wantText: []string{"Gmail"},
		},
		{
			name: "microsoft 365 smtp auth off", sec: outgoing.SecuritySTARTTLS,
			script: &testpeer.SMTPScript{Auth: func(int, string, string) error {
				return testpeer.SMTPReply(535, "5.7.139", "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.")
			}},
			wantStep: outgoing.StepAuth, wantCode: "smtp_auth_disabled", wantReply: 535,
			wantText: []string{"Microsoft 365"},
		},
		{
			name: "mail from refused", sec: outgoing.SecuritySSL,
			script: &testpeer.SMTPScript{Mail: func(int, string) error {
				return testpeer.SMTPReply(553, "5.7.1", "Sender address rejected: not owned by user "+scUser)
			}},
			wantStep: outgoing.StepMailFrom, wantCode: "sender_not_allowed", wantReply: 553,
			wantText: []string{scUser},
		},
		{
			name: "sender refused at rcpt", sec: outgoing.SecuritySSL,
			script: &testpeer.SMTPScript{Rcpt: func(int, string) error {
				return testpeer.SMTPReply(553, "5.7.1", "<"+scUser+">: Sender address rejected: not owned by user")
			}},
			wantStep: outgoing.StepRcpt, wantCode: "sender_not_allowed", wantReply: 553,
			wantText: []string{scUser},
		},
		{
			name: "recipient refused", sec: outgoing.SecuritySSL,
			script: &testpeer.SMTPScript{Rcpt: func(int, string) error {
				return testpeer.SMTPReply(550, "5.1.1", "User unknown")
			}},
			wantStep: outgoing.StepRcpt, wantCode: "recipient_refused", wantReply: 550,
			wantText: []string{scRcpt},
		},
		{
			name: "recipient greylisted", sec: outgoing.SecuritySTARTTLS,
			script: &testpeer.SMTPScript{Rcpt: func(int, string) error {
				return testpeer.SMTPReply(451, "4.7.1", "Greylisted, try again later")
			}},
			wantStep: outgoing.StepRcpt, wantCode: "temporary_failure", wantReply: 451,
			wantText: []string{"RCPT TO"},
		},
		{
			name: "login needed", sec: outgoing.SecuritySTARTTLS,
			edit:     func(s *outgoing.Settings) { s.Auth, s.Login, s.Password = outgoing.AuthNone, "", "" },
			wantStep: outgoing.StepMailFrom, wantCode: "auth_required", wantReply: 530,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, ca := scPeer(t, scModeFor(c.sec), c.script)
			set := scSettings(s, c.sec)
			if c.edit != nil {
				c.edit(&set)
			}
			var log bytes.Buffer
			rep := scNetwork(ca, &log).Check(context.Background(), outgoing.CheckRequest{
				Settings: set, From: scUser, Rcpt: scRcpt, Timeout: scGuard,
			})
			last := scLast(rep)
			if rep.OK || rep.Failed != c.wantStep || last.Step != c.wantStep || last.OK {
				t.Fatalf("Check() ok = %v, failed step = %q, last = %+v; want failure at %q", rep.OK, rep.Failed, last, c.wantStep)
			}
			if last.Code != c.wantCode {
				t.Errorf("Check() code = %q, want %q", last.Code, c.wantCode)
			}
			if last.Reply == nil || last.Reply.Code != c.wantReply {
				t.Errorf("Check() reply = %+v, want code %d", last.Reply, c.wantReply)
			}
			if last.Explanation == "" || last.Hint == "" {
				t.Errorf("Check() explanation = %q, hint = %q, want both", last.Explanation, last.Hint)
			}
			for _, w := range c.wantText {
				if !strings.Contains(last.Explanation, w) {
					t.Errorf("Check() explanation = %q, want it to mention %q", last.Explanation, w)
				}
			}
			js, _ := json.Marshal(rep)
			scNoPassword(t, "report", js)
			scNoPassword(t, "log", log.Bytes())
		})
	}
}

func TestCheckStartTLSIsRequired(t *testing.T) {
	// A plain server offers AUTH in clear text and no STARTTLS, as a
	// misconfigured server or an attacker stripping STARTTLS would.
	s, ca := scPeer(t, testpeer.SMTPPlain, nil)
	rep := scNetwork(ca, nil).Check(context.Background(), outgoing.CheckRequest{
		Settings: scSettings(s, outgoing.SecuritySTARTTLS), From: scUser, Timeout: scGuard,
	})
	last := scLast(rep)
	if rep.OK || rep.Failed != outgoing.StepSTARTTLS || last.Code != "starttls_missing" {
		t.Fatalf("Check() failed step = %q, code = %q, want %q, %q", rep.Failed, last.Code, outgoing.StepSTARTTLS, "starttls_missing")
	}
	for _, sess := range s.Sessions() {
		if len(sess.Auths) != 0 {
			t.Errorf("peer saw AUTH %+v, want none", sess.Auths)
		}
		if bytes.Contains(bytes.ToUpper(sess.Transcript), []byte("AUTH")) {
			t.Errorf("peer transcript contains AUTH: %q", sess.Transcript)
		}
		scNoPassword(t, "peer transcript", sess.Transcript)
	}
}

func TestCheckCertificateProblems(t *testing.T) {
	ca := testpeer.NewCA(t)
	other := ca.Issue(t, testpeer.CertOptions{Names: []string{"mail.other.example", "smtp.other.example"}})
	self := testpeer.SelfSigned(t, testpeer.CertOptions{Names: []string{scNamedHost}})
	expired := ca.Issue(t, testpeer.CertOptions{
		Names:     []string{scNamedHost},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour),
	})
	good := ca.Issue(t, testpeer.CertOptions{Names: []string{scNamedHost}})
	cases := []struct {
		name     string
		sec      outgoing.Security
		cert     testpeer.Issued
		roots    *testpeer.CA // nil: the system roots
		wantStep outgoing.Step
		wantCode string
		wantText []string
	}{
		{"ssl name mismatch", outgoing.SecuritySSL, other, ca, outgoing.StepTLS, "tls_name_mismatch", []string{"mail.other.example", "smtp.other.example", scNamedHost}},
		{"starttls name mismatch", outgoing.SecuritySTARTTLS, other, ca, outgoing.StepSTARTTLS, "tls_name_mismatch", []string{"mail.other.example"}},
		{"self-signed", outgoing.SecuritySSL, self, ca, outgoing.StepTLS, "tls_untrusted", []string{scNamedHost}},
		{"unknown authority", outgoing.SecuritySSL, good, nil, outgoing.StepTLS, "tls_untrusted", []string{"mailsync test CA"}},
		{"expired", outgoing.SecuritySTARTTLS, expired, ca, outgoing.StepSTARTTLS, "tls_expired", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := testpeer.StartSMTP(t, &testpeer.SMTPOptions{
				Mode:  scModeFor(c.sec),
				TLS:   &tls.Config{Certificates: []tls.Certificate{c.cert.TLS}, MinVersion: tls.VersionTLS12},
				Users: map[string]string{scUser: scPass},
			})
			n := scNetwork(c.roots, nil)
			rep := n.Check(context.Background(), outgoing.CheckRequest{
				Settings: scSettings(s, c.sec), From: scUser, Timeout: scGuard,
			})
			last := scLast(rep)
			if rep.OK || rep.Failed != c.wantStep || last.Code != c.wantCode {
				t.Fatalf("Check() failed step = %q, code = %q (%s), want %q, %q", rep.Failed, last.Code, last.Explanation, c.wantStep, c.wantCode)
			}
			for _, w := range c.wantText {
				if !strings.Contains(last.Explanation, w) {
					t.Errorf("Check() explanation = %q, want it to mention %q", last.Explanation, w)
				}
			}
			for _, sess := range s.Sessions() {
				if len(sess.Auths) != 0 {
					t.Errorf("peer saw AUTH %+v after a certificate failure", sess.Auths)
				}
			}
		})
	}
}

func TestCheckStallAtEachStage(t *testing.T) {
	cases := []struct {
		stage    testpeer.SMTPStage
		sec      outgoing.Security
		data     bool
		wantStep outgoing.Step
	}{
		{testpeer.SMTPStageGreeting, outgoing.SecuritySSL, false, outgoing.StepTLS},
		{testpeer.SMTPStageGreeting, outgoing.SecuritySTARTTLS, false, outgoing.StepEHLO},
		{testpeer.SMTPStageEHLO, outgoing.SecuritySSL, false, outgoing.StepEHLO},
		{testpeer.SMTPStageEHLO, outgoing.SecurityNone, false, outgoing.StepEHLO},
		{testpeer.SMTPStageAuth, outgoing.SecuritySTARTTLS, false, outgoing.StepAuth},
		{testpeer.SMTPStageMail, outgoing.SecuritySSL, false, outgoing.StepMailFrom},
		{testpeer.SMTPStageRcpt, outgoing.SecuritySSL, false, outgoing.StepRcpt},
		{testpeer.SMTPStageData, outgoing.SecuritySSL, true, outgoing.StepData},
	}
	for _, c := range cases {
		t.Run(string(c.stage)+"/"+string(c.sec), func(t *testing.T) {
			t.Parallel()
			s, ca := scPeer(t, scModeFor(c.sec), &testpeer.SMTPScript{StallAt: c.stage})
			req := outgoing.CheckRequest{Settings: scSettings(s, c.sec), From: scUser, Timeout: scTimeout}
			if c.data {
				req.TestRecipient = scRcpt
			}
			start := time.Now()
			rep := scNetwork(ca, nil).Check(context.Background(), req)
			elapsed := time.Since(start)
			last := scLast(rep)
			if rep.OK || rep.Failed != c.wantStep || last.Code != "timeout" {
				t.Fatalf("Check() failed step = %q, code = %q (%s), want %q, %q", rep.Failed, last.Code, last.Explanation, c.wantStep, "timeout")
			}
			if bound := scTimeout + time.Second; elapsed > bound || time.Duration(rep.ElapsedMS)*time.Millisecond > bound {
				t.Errorf("Check() took %v (report: %d ms), want under %v", elapsed, rep.ElapsedMS, bound)
			}
			if last.Explanation == "" || last.Hint == "" {
				t.Errorf("Check() explanation = %q, hint = %q, want both", last.Explanation, last.Hint)
			}
			if c.data && !strings.Contains(last.Explanation, "may have been delivered") {
				t.Errorf("Check() explanation = %q, want it to say the message may have been delivered", last.Explanation)
			}
		})
	}
}

func TestCheckDataStepDelivers(t *testing.T) {
	for _, lang := range []i18n.Lang{i18n.En, i18n.Ru} {
		t.Run(string(lang), func(t *testing.T) {
			s, ca := scPeer(t, testpeer.SMTPStartTLS, nil)
			rep := scNetwork(ca, nil).Check(context.Background(), outgoing.CheckRequest{
				Settings: scSettings(s, outgoing.SecuritySTARTTLS), From: scUser, Rcpt: "ignored@example.net",
				TestRecipient: scRcpt, Lang: string(lang), Timeout: scGuard,
			})
			if !rep.OK {
				t.Fatalf("Check() failed at %q: %+v", rep.Failed, scLast(rep))
			}
			if got, want := scSteps(rep), append(slices.Clone(stepsSTARTTLS), outgoing.StepData); !slices.Equal(got, want) {
				t.Errorf("Check() steps = %v, want %v", got, want)
			}
			if data := scLast(rep); data.Reply == nil || data.Reply.Code != 250 {
				t.Errorf("Check() data reply = %+v, want 250", data.Reply)
			}
			msgs := s.Messages()
			if len(msgs) != 1 {
				t.Fatalf("peer messages = %d, want 1", len(msgs))
			}
			m := msgs[0]
			if m.From != scUser || !slices.Equal(m.To, []string{scRcpt}) || !m.TLS || m.AuthUser != scUser {
				t.Errorf("peer message envelope = from %q to %v, TLS %v, user %q; want from %q to [%s] over TLS as %q",
					m.From, m.To, m.TLS, m.AuthUser, scUser, scRcpt, scUser)
			}
			parsed, err := mail.ReadMessage(bytes.NewReader(m.Data))
			if err != nil {
				t.Fatalf("parse test message: %v\n%s", err, m.Data)
			}
			for _, h := range []string{"From", "To", "Subject", "Date", "Message-Id"} {
				if parsed.Header.Get(h) == "" {
					t.Errorf("test message lacks %s:\n%s", h, m.Data)
				}
			}
			subject, err := new(mime.WordDecoder).DecodeHeader(parsed.Header.Get("Subject"))
			if want := i18n.T(lang, "check.test_subject"); err != nil || subject != want {
				t.Errorf("test message subject = %q (%v), want %q", subject, err, want)
			}
			body, err := io.ReadAll(quotedprintable.NewReader(parsed.Body))
			if err != nil || !strings.Contains(string(body), "mailsync") {
				t.Errorf("test message body = %q (%v), want it to name mailsync", body, err)
			}
		})
	}
}

// scRebinding resolves any name to 127.0.0.1 without netguard's early
// check, as a DNS rebinding would, and dials through netguard.
type scRebinding struct{ d *netguard.Dialer }

func (r scRebinding) Resolve(context.Context, string) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
}

func (r scRebinding) DialAddr(ctx context.Context, host string, addr netip.AddrPort) (net.Conn, error) {
	return r.d.DialAddr(ctx, host, addr)
}

func TestCheckRefusedAddress(t *testing.T) {
	s, ca := scPeer(t, testpeer.SMTPImplicitTLS, nil)
	toLoopback := scResolver{scNamedHost: {netip.MustParseAddr("127.0.0.1")}}
	cases := []struct {
		name     string
		dialer   outgoing.Dialer
		host     string
		wantStep outgoing.Step
		wantText []string
	}{
		{"IP literal", &netguard.Dialer{}, "127.0.0.1", outgoing.StepDNS, []string{"127.0.0.1", "loopback"}},
		{"name", &netguard.Dialer{Resolver: toLoopback}, scNamedHost, outgoing.StepDNS, []string{scNamedHost, "127.0.0.1"}},
		{"rebinding", scRebinding{&netguard.Dialer{}}, scNamedHost, outgoing.StepTCP, []string{"127.0.0.1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := &outgoing.Network{Dialer: c.dialer, RootCAs: ca.Pool()}
			set := scSettings(s, outgoing.SecuritySSL)
			set.Host = c.host
			before := s.Conns()
			rep := n.Check(context.Background(), outgoing.CheckRequest{Settings: set, From: scUser, Timeout: scGuard})
			last := scLast(rep)
			if rep.OK || rep.Failed != c.wantStep || last.Code != "address_blocked" {
				t.Fatalf("Check() failed step = %q, code = %q (%s), want %q, %q", rep.Failed, last.Code, last.Explanation, c.wantStep, "address_blocked")
			}
			for _, w := range c.wantText {
				if !strings.Contains(last.Explanation, w) {
					t.Errorf("Check() explanation = %q, want it to mention %q", last.Explanation, w)
				}
			}
			if !strings.Contains(last.Hint, netguard.AllowHostsEnv) {
				t.Errorf("Check() hint = %q, want it to name %s", last.Hint, netguard.AllowHostsEnv)
			}
			if got := s.Conns(); got != before {
				t.Errorf("peer accepted %d connections, want none", got-before)
			}
		})
	}
}

// scResolverFunc adapts a function to netguard.Resolver.
type scResolverFunc func(ctx context.Context) ([]netip.Addr, error)

func (f scResolverFunc) LookupNetIP(ctx context.Context, _, _ string) ([]netip.Addr, error) {
	return f(ctx)
}

func TestCheckDNSFailure(t *testing.T) {
	cases := []struct {
		name     string
		resolver netguard.Resolver
		wantCode string
	}{
		{"not found", scResolver{}, "dns_not_found"},
		{"server failure", scResolverFunc(func(context.Context) ([]netip.Addr, error) {
			return nil, &net.DNSError{Err: "server misbehaving", Name: scNamedHost, IsTemporary: true}
		}), "dns_failed"},
		{"other error", scResolverFunc(func(context.Context) ([]netip.Addr, error) {
			return nil, errors.New("resolver exploded")
		}), "dns_failed"},
		{"stalled", scResolverFunc(func(ctx context.Context) ([]netip.Addr, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}), "timeout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := &outgoing.Network{Dialer: &netguard.Dialer{Resolver: c.resolver, Allow: scLoopback}}
			set := outgoing.Settings{Host: scNamedHost, Port: 465, Security: outgoing.SecuritySSL, Auth: outgoing.AuthNone}
			rep := n.Check(context.Background(), outgoing.CheckRequest{Settings: set, From: scUser, Timeout: scTimeout})
			last := scLast(rep)
			if rep.OK || rep.Failed != outgoing.StepDNS || last.Code != c.wantCode {
				t.Fatalf("Check() failed step = %q, code = %q (%s), want %q, %q", rep.Failed, last.Code, last.Explanation, outgoing.StepDNS, c.wantCode)
			}
			if c.wantCode == "dns_not_found" && !strings.Contains(last.Explanation, scNamedHost) {
				t.Errorf("Check() explanation = %q, want it to name %q", last.Explanation, scNamedHost)
			}
		})
	}
}

func TestCheckPortAndSecurityMismatch(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()

	plain, ca := scPeer(t, testpeer.SMTPPlain, nil)
	implicit, _ := scPeer(t, testpeer.SMTPImplicitTLS, nil)
	cases := []struct {
		name     string
		port     int
		sec      outgoing.Security
		wantStep outgoing.Step
		wantCode string
		wantHint string
	}{
		{"nothing listens", closedPort, outgoing.SecuritySSL, outgoing.StepTCP, "connection_refused", "465"},
		{"ssl on a plain port", plain.Port(), outgoing.SecuritySSL, outgoing.StepTLS, "tls_not_spoken", "starttls"},
		{"starttls on an implicit TLS port", implicit.Port(), outgoing.SecuritySTARTTLS, outgoing.StepEHLO, "timeout", "ssl"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			set := outgoing.Settings{Host: scNamedHost, Port: c.port, Security: c.sec, Auth: outgoing.AuthLogin, Login: scUser, Password: scPass}
			rep := scNetwork(ca, nil).Check(context.Background(), outgoing.CheckRequest{Settings: set, From: scUser, Timeout: scTimeout})
			last := scLast(rep)
			if rep.OK || rep.Failed != c.wantStep || last.Code != c.wantCode {
				t.Fatalf("Check() failed step = %q, code = %q (%s), want %q, %q", rep.Failed, last.Code, last.Explanation, c.wantStep, c.wantCode)
			}
			if !strings.Contains(last.Hint, c.wantHint) {
				t.Errorf("Check() hint = %q, want it to mention %q", last.Hint, c.wantHint)
			}
		})
	}
}

func TestCheckSpeaksTheRequestedLanguage(t *testing.T) {
	s, ca := scPeer(t, testpeer.SMTPImplicitTLS, nil)
	set := scSettings(s, outgoing.SecuritySSL)
	set.Password = "wrong"
	cases := []struct {
		lang string
		want i18n.Lang
	}{
		{"", i18n.En},
		{"en", i18n.En},
		{"ru", i18n.Ru},
		{"ru-RU,ru;q=0.9,en-US;q=0.8", i18n.Ru},
		{"de", i18n.En},
	}
	for _, c := range cases {
		rep := scNetwork(ca, nil).Check(context.Background(), outgoing.CheckRequest{Settings: set, From: scUser, Lang: c.lang, Timeout: scGuard})
		last := scLast(rep)
		if want := i18n.T(c.want, "explain.auth_rejected"); last.Explanation != want {
			t.Errorf("Check(lang %q) explanation = %q, want %q", c.lang, last.Explanation, want)
		}
		if want := i18n.T(c.want, "hint.auth_rejected"); last.Hint != want {
			t.Errorf("Check(lang %q) hint = %q, want %q", c.lang, last.Hint, want)
		}
	}
}

func TestCheckNeverRevealsThePassword(t *testing.T) {
	// A hostile server echoes the credentials in its replies.
	echo := func(what string) error {
		return testpeer.SMTPReply(535, "5.7.8", "bad credentials "+what)
	}
	cases := []struct {
		name   string
		script *testpeer.SMTPScript
	}{
		{"plain echo", &testpeer.SMTPScript{Auth: func(_ int, _, pw string) error { return echo(pw) }}},
		{"base64 echo", &testpeer.SMTPScript{Auth: func(_ int, _, pw string) error {
			return echo(base64.StdEncoding.EncodeToString([]byte(pw)))
		}}},
		{"plain blob echo", &testpeer.SMTPScript{Auth: func(_ int, login, pw string) error {
			return echo(base64.StdEncoding.EncodeToString([]byte("\x00" + login + "\x00" + pw)))
		}}},
		{"echo at rcpt", &testpeer.SMTPScript{Rcpt: func(int, string) error {
			return testpeer.SMTPReply(550, "5.1.1", "no such user; by the way your password is "+scPass)
		}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, ca := scPeer(t, testpeer.SMTPImplicitTLS, c.script)
			var log bytes.Buffer
			n := scNetwork(ca, &log)
			for _, lang := range []string{"en", "ru"} {
				rep := n.Check(context.Background(), outgoing.CheckRequest{Settings: scSettings(s, outgoing.SecuritySSL), From: scUser, Lang: lang, Timeout: scGuard})
				if rep.OK {
					t.Fatalf("Check() ok, want a failure")
				}
				js, _ := json.Marshal(rep)
				scNoPassword(t, "report", js)
				if !bytes.Contains(js, []byte(secret.Redacted)) {
					t.Errorf("report = %s, want the echoed password replaced by %q", js, secret.Redacted)
				}
			}
			c, err := n.Dial(context.Background(), scSettings(s, outgoing.SecuritySSL), nil)
			if err == nil {
				_, err = c.Send(context.Background(), scUser, []string{scRcpt}, strings.NewReader("Subject: x\r\n\r\nx\r\n"), nil)
				_ = c.Close()
			}
			if err == nil {
				t.Fatalf("Dial()+Send() succeeded, want a failure")
			}
			scNoPassword(t, "error", []byte(err.Error()))
			for e := errors.Unwrap(err); e != nil; e = errors.Unwrap(e) {
				scNoPassword(t, "wrapped error", []byte(e.Error()))
			}
			scNoPassword(t, "log", log.Bytes())
		})
	}
}

func TestCheckInvalidSettings(t *testing.T) {
	s, ca := scPeer(t, testpeer.SMTPImplicitTLS, nil)
	set := scSettings(s, outgoing.SecuritySSL)
	set.Port = 0
	rep := scNetwork(ca, nil).Check(context.Background(), outgoing.CheckRequest{Settings: set, From: scUser, Timeout: scGuard})
	last := scLast(rep)
	if rep.OK || rep.Failed != outgoing.StepDNS || last.Code != "invalid_settings" || !strings.Contains(last.Explanation, "port") {
		t.Fatalf("Check() failed step = %q, code = %q, explanation = %q; want %q, %q naming the port", rep.Failed, last.Code, last.Explanation, outgoing.StepDNS, "invalid_settings")
	}
	if s.Conns() != 0 {
		t.Errorf("peer accepted %d connections, want none", s.Conns())
	}
}
