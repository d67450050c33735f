package outgoing_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/outgoing"
)

// mitmCase is one attack by a man in the middle between mailsync and its
// SMTP server.
type mitmCase struct {
	name   string
	sec    outgoing.Security
	attack testpeer.MITMAttack
	cert   testpeer.Issued
}

// mitmCerts are the certificates an attacker may present for localhost:
// its own (self-signed), one that expired, one for another name from the
// trusted CA, and one from a CA nobody trusts.
func mitmCerts(t *testing.T, ca *testpeer.CA) map[string]testpeer.Issued {
	t.Helper()
	return map[string]testpeer.Issued{
		"self-signed": testpeer.SelfSigned(t, testpeer.CertOptions{}),
		"expired": ca.Issue(t, testpeer.CertOptions{
			NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour),
		}),
		"wrong host": ca.Issue(t, testpeer.CertOptions{Names: []string{"mail.other.example"}}),
		"unknown CA": testpeer.NewCA(t).Issue(t, testpeer.CertOptions{}),
	}
}

// mitmCases are the attacks on each security: STARTTLS stripped from EHLO,
// STARTTLS refused, and the four certificates after STARTTLS and on
// implicit TLS. Each must fail at tls or starttls.
func mitmCases(t *testing.T, ca *testpeer.CA) []mitmCase {
	t.Helper()
	cases := []mitmCase{
		{name: "starttls stripped", sec: outgoing.SecuritySTARTTLS, attack: testpeer.MITMStripSTARTTLS},
		{name: "starttls refused", sec: outgoing.SecuritySTARTTLS, attack: testpeer.MITMRefuseSTARTTLS},
	}
	certs := mitmCerts(t, ca)
	names := make([]string, 0, len(certs))
	for n := range certs {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, sec := range []outgoing.Security{outgoing.SecuritySTARTTLS, outgoing.SecuritySSL} {
		for _, n := range names {
			cases = append(cases, mitmCase{name: fmt.Sprintf("%s %s", sec, n), sec: sec, attack: testpeer.MITMCertificate, cert: certs[n]})
		}
	}
	return cases
}

// wantStep is the step at which an attack on sec must fail.
func wantStep(sec outgoing.Security) outgoing.Step {
	if sec == outgoing.SecuritySSL {
		return outgoing.StepTLS
	}
	return outgoing.StepSTARTTLS
}

// assertNothingLeaked fails when the MITM read any form of the password or
// an AUTH command, or when the client accepted the MITM's certificate, or
// when the real server saw an AUTH on a connection after the first skip.
func assertNothingLeaked(t *testing.T, m *testpeer.MITM, peer *testpeer.SMTPServer, skip int, login, password string) {
	t.Helper()
	if found := m.CredentialsInClear(login, password); found != nil {
		t.Errorf("the man in the middle read credentials in clear text: %v\n%q", found, m.Cleartext())
	}
	if accepted, _ := m.Certificates(); accepted != 0 {
		t.Errorf("the client accepted the man in the middle's certificate %d times", accepted)
	}
	for _, s := range peer.Sessions()[skip:] {
		if len(s.Auths) != 0 {
			t.Errorf("the server saw AUTH %+v through the man in the middle", s.Auths)
		}
	}
}

// TestMITMCheck runs the SMTP check through a man in the middle: through a
// plain relay it succeeds (and the relay reads no credentials), under every
// attack it fails at tls or starttls with no credential in clear text and
// no certificate accepted. A relay to a server without TLS and security
// none shows that the MITM does see credentials when they are sent in
// clear, so the zero above is a measurement.
func TestMITMCheck(t *testing.T) {
	ca := testpeer.NewCA(t)
	serverTLS := ca.ServerTLS(t, "localhost", "127.0.0.1", scNamedHost)
	// The canary password, and a debug logger that fails the test if it
	// shows in a record.
	const pass = testpeer.CanaryPassword
	users := map[string]string{scUser: pass}
	network := func(t *testing.T, roots *testpeer.CA) *outgoing.Network {
		n := scNetwork(roots, nil)
		n.Logger = slog.New(testpeer.CanaryHandler(t, slog.DiscardHandler, []string{scUser}))
		return n
	}
	peers := map[outgoing.Security]*testpeer.SMTPServer{
		outgoing.SecuritySTARTTLS: testpeer.StartSMTP(t, &testpeer.SMTPOptions{Mode: testpeer.SMTPStartTLS, TLS: serverTLS, Users: users}),
		outgoing.SecuritySSL:      testpeer.StartSMTP(t, &testpeer.SMTPOptions{Mode: testpeer.SMTPImplicitTLS, TLS: serverTLS, Users: users}),
		outgoing.SecurityNone:     testpeer.StartSMTP(t, &testpeer.SMTPOptions{Mode: testpeer.SMTPPlain, Users: users}),
	}
	check := func(t *testing.T, sec outgoing.Security, m *testpeer.MITM) outgoing.Report {
		t.Helper()
		set := scSettings(peers[sec], sec)
		set.Port, set.Password = m.Port(), pass
		return network(t, ca).Check(context.Background(), outgoing.CheckRequest{Settings: set, From: scUser, Timeout: scGuard})
	}
	start := func(t *testing.T, sec outgoing.Security, attack testpeer.MITMAttack, cert testpeer.Issued) *testpeer.MITM {
		return testpeer.StartMITM(t, testpeer.MITMOptions{
			Protocol: testpeer.MITMSMTP, Attack: attack, Upstream: peers[sec].Addr(),
			ImplicitTLS: sec == outgoing.SecuritySSL, Cert: cert, UpstreamTLS: ca.ClientTLS("localhost"),
		})
	}

	for _, sec := range []outgoing.Security{outgoing.SecuritySTARTTLS, outgoing.SecuritySSL} {
		t.Run("control relay "+string(sec), func(t *testing.T) {
			m := start(t, sec, testpeer.MITMRelay, testpeer.Issued{})
			if rep := check(t, sec, m); !rep.OK {
				t.Fatalf("Check() through a relay failed at %q: %+v", rep.Failed, scLast(rep))
			}
			if found := m.CredentialsInClear(scUser, pass); found != nil {
				t.Errorf("the relay read credentials: %v", found)
			}
			if sec == outgoing.SecuritySTARTTLS && m.STARTTLS() != 1 {
				t.Errorf("the relay saw %d STARTTLS, want 1", m.STARTTLS())
			}
		})
	}
	t.Run("control relay none sees the password", func(t *testing.T) {
		m := start(t, outgoing.SecurityNone, testpeer.MITMRelay, testpeer.Issued{})
		if rep := check(t, outgoing.SecurityNone, m); !rep.OK {
			t.Fatalf("Check() with security none failed at %q: %+v", rep.Failed, scLast(rep))
		}
		if found := m.CredentialsInClear(scUser, pass); len(found) == 0 {
			t.Errorf("the MITM did not see the AUTH sent in clear text: its recording misses what it should catch")
		}
	})

	// A client that trusted the attacker's CA would hand it everything: the
	// MITM reads the AUTH inside the TLS it ended and relays the session to
	// the server.
	for _, sec := range []outgoing.Security{outgoing.SecuritySTARTTLS, outgoing.SecuritySSL} {
		t.Run("control trusted attacker CA "+string(sec), func(t *testing.T) {
			evil := testpeer.NewCA(t)
			m := start(t, sec, testpeer.MITMCertificate, evil.Issue(t, testpeer.CertOptions{Names: []string{scNamedHost}}))
			set := scSettings(peers[sec], sec)
			set.Port, set.Password = m.Port(), pass
			rep := network(t, evil).Check(context.Background(), outgoing.CheckRequest{Settings: set, From: scUser, Timeout: scGuard})
			if !rep.OK {
				t.Fatalf("Check() trusting the attacker's CA failed at %q: %+v", rep.Failed, scLast(rep))
			}
			if accepted, _ := m.Certificates(); accepted != 1 || len(m.CredentialsInClear(scUser, pass)) == 0 {
				t.Errorf("accepted %d certificates and read %v, want 1 and the credentials", accepted, m.CredentialsInClear(scUser, pass))
			}
		})
	}

	for _, c := range mitmCases(t, ca) {
		t.Run(c.name, func(t *testing.T) {
			m := start(t, c.sec, c.attack, c.cert)
			skip := peers[c.sec].Conns()
			rep := check(t, c.sec, m)
			if rep.OK || rep.Failed != wantStep(c.sec) {
				t.Errorf("Check() step = %q (%+v), want a failure at %q", rep.Failed, scLast(rep), wantStep(c.sec))
			}
			if m.Conns() == 0 {
				t.Errorf("the check never reached the man in the middle")
			}
			assertNothingLeaked(t, m, peers[c.sec], skip, scUser, pass)
		})
	}
}

// TestMITMOutboxSend creates an account through a relay, then attacks the
// worker's connections: every send fails at tls or starttls, nothing is
// delivered, and no credential or accepted certificate shows.
func TestMITMOutboxSend(t *testing.T) {
	e := newEnv(t, storetest.Open(t, storetest.Dialects[0]), outgoing.Config{})
	peers := map[outgoing.Security]*testpeer.SMTPServer{
		outgoing.SecuritySTARTTLS: e.peer(t, testpeer.SMTPStartTLS, nil),
		outgoing.SecuritySSL:      e.peer(t, testpeer.SMTPImplicitTLS, nil),
	}
	mitms := map[outgoing.Security]*testpeer.MITM{}
	for sec, p := range peers {
		m := testpeer.StartMITM(t, testpeer.MITMOptions{
			Protocol: testpeer.MITMSMTP, Attack: testpeer.MITMRelay, Upstream: p.Addr(),
			ImplicitTLS: sec == outgoing.SecuritySSL, UpstreamTLS: e.ca.ClientTLS("localhost"),
		})
		mitms[sec] = m
		in := accountInput(p, sec, "")
		in.Port = ptr(m.Port())
		addr := fmt.Sprintf("site-%s@example.com", sec)
		in.Email = ptr(addr)
		if _, rep, err := e.svc.CreateAccount(context.Background(), admin, in); err != nil {
			t.Fatalf("CreateAccount() through a relay = %v; report %+v", err, rep)
		}
	}

	for _, c := range mitmCases(t, e.ca) {
		t.Run(c.name, func(t *testing.T) {
			m, p := mitms[c.sec], peers[c.sec]
			m.SetAttack(c.attack, c.cert)
			before, skip := len(m.Cleartext()), p.Conns()
			conns := m.Conns()
			msg := e.submit(t, admin, draft(fmt.Sprintf("site-%s@example.com", c.sec), "rcpt@example.org"))
			e.process(t)
			got := e.status(t, msg.ID)
			if got.Status == outgoing.StatusSent || got.LastStep != string(wantStep(c.sec)) {
				t.Errorf("message status %q, step %q (%s), want unsent at %q", got.Status, got.LastStep, got.LastError, wantStep(c.sec))
			}
			if m.Conns() == conns {
				t.Errorf("the worker never reached the man in the middle")
			}
			if len(p.Messages()) != 0 {
				t.Errorf("the server received %d messages through the man in the middle", len(p.Messages()))
			}
			if strings.Contains(string(m.Cleartext()[before:]), "MAIL FROM") {
				t.Errorf("the worker started a transaction in clear text")
			}
			assertNothingLeaked(t, m, p, skip, siteAddr, sitePass)
		})
	}
}
