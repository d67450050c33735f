package mailbox

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/outgoing"
)

const (
	mitmLogin    = "mitm@example.test"
	mitmPassword = testpeer.CanaryPassword
)

// imapMITMCase is one attack by a man in the middle between mailsync and an
// IMAP server.
type imapMITMCase struct {
	name   string
	sec    outgoing.Security
	attack testpeer.MITMAttack
	cert   testpeer.Issued
}

// imapMITMCases are STARTTLS stripped from the capabilities (with
// LOGINDISABLED) and refused, and four certificates an attacker may present
// for localhost — its own, an expired one, one for another name from the
// trusted CA, one from a CA nobody trusts — after STARTTLS and on implicit
// TLS.
func imapMITMCases(t *testing.T, ca *testpeer.CA) []imapMITMCase {
	t.Helper()
	certs := map[string]testpeer.Issued{
		"self-signed": testpeer.SelfSigned(t, testpeer.CertOptions{}),
		"expired": ca.Issue(t, testpeer.CertOptions{
			NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour),
		}),
		"wrong host": ca.Issue(t, testpeer.CertOptions{Names: []string{"mail.other.example"}}),
		"unknown CA": testpeer.NewCA(t).Issue(t, testpeer.CertOptions{}),
	}
	cases := []imapMITMCase{
		{name: "starttls stripped", sec: outgoing.SecuritySTARTTLS, attack: testpeer.MITMStripSTARTTLS},
		{name: "starttls refused", sec: outgoing.SecuritySTARTTLS, attack: testpeer.MITMRefuseSTARTTLS},
	}
	names := make([]string, 0, len(certs))
	for n := range certs {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, sec := range []outgoing.Security{outgoing.SecuritySTARTTLS, outgoing.SecuritySSL} {
		for _, n := range names {
			cases = append(cases, imapMITMCase{name: fmt.Sprintf("%s %s", sec, n), sec: sec, attack: testpeer.MITMCertificate, cert: certs[n]})
		}
	}
	return cases
}

// imapMITMStep is the step at which an attack on sec must fail.
func imapMITMStep(sec outgoing.Security) outgoing.Step {
	if sec == outgoing.SecuritySSL {
		return outgoing.StepTLS
	}
	return outgoing.StepSTARTTLS
}

// imapMITMPeers are in-process IMAP servers for each security, all with
// the user mitmLogin.
func imapMITMPeers(t *testing.T, ca *testpeer.CA) map[outgoing.Security]*testpeer.IMAPServer {
	t.Helper()
	opts := func(starttls, plain bool) *testpeer.IMAPOptions {
		return &testpeer.IMAPOptions{CA: ca, StartTLS: starttls, Plain: plain, User: mitmLogin, Password: mitmPassword}
	}
	return map[outgoing.Security]*testpeer.IMAPServer{
		outgoing.SecuritySSL:      testpeer.StartIMAP(t, opts(false, false)),
		outgoing.SecuritySTARTTLS: testpeer.StartIMAP(t, opts(true, false)),
		outgoing.SecurityNone:     testpeer.StartIMAP(t, opts(false, true)),
	}
}

func startIMAPMITM(t *testing.T, ca *testpeer.CA, upstream *testpeer.IMAPServer, sec outgoing.Security, attack testpeer.MITMAttack, cert testpeer.Issued) *testpeer.MITM {
	t.Helper()
	return testpeer.StartMITM(t, testpeer.MITMOptions{
		Protocol: testpeer.MITMIMAP, Attack: attack, Upstream: upstream.Addr(),
		ImplicitTLS: sec == outgoing.SecuritySSL, Cert: cert, UpstreamTLS: ca.ClientTLS("localhost"),
	})
}

// mitmNetwork is testNetwork with a logger that also fails the test when
// the canary password shows in a record.
func mitmNetwork(t *testing.T, pool *x509.CertPool) (*IMAPNetwork, *syncBuffer) {
	n, logs := testNetwork(pool)
	n.Logger = slog.New(testpeer.CanaryHandler(t, n.Logger.Handler(), []string{mitmLogin}))
	return n, logs
}

func mitmSettings(m *testpeer.MITM, sec outgoing.Security) IMAPSettings {
	return IMAPSettings{Host: "localhost", Port: m.Port(), Security: sec, Login: mitmLogin, Password: secret.Secret(mitmPassword)}
}

// TestMITMIMAPCheck runs the IMAP connect check and Dial (what the sync
// engine and sent copies use) through a man in the middle. Through a relay
// both succeed; under every attack both fail at tls or starttls, the MITM
// reads no form of the password and no LOGIN, and no certificate of its is
// accepted. Two controls show the MITM would have seen it: LOGIN with
// security none, and a client that trusts the attacker's CA.
func TestMITMIMAPCheck(t *testing.T) {
	ca := testpeer.NewCA(t)
	peers := imapMITMPeers(t, ca)

	for _, sec := range []outgoing.Security{outgoing.SecuritySTARTTLS, outgoing.SecuritySSL} {
		t.Run("control relay "+string(sec), func(t *testing.T) {
			m := startIMAPMITM(t, ca, peers[sec], sec, testpeer.MITMRelay, testpeer.Issued{})
			n, logs := mitmNetwork(t, ca.Pool())
			res := n.Check(context.Background(), mitmSettings(m, sec), "en", 10*time.Second)
			if !res.Report.OK {
				t.Fatalf("Check() through a relay failed at %q: %+v", res.Report.Failed, lastStep(res.Report))
			}
			if found := m.CredentialsInClear(mitmLogin, mitmPassword); found != nil {
				t.Errorf("the relay read credentials: %v", found)
			}
			assertNoSecret(t, res, logs, mitmPassword)
		})
	}
	t.Run("control relay none sees the password", func(t *testing.T) {
		m := startIMAPMITM(t, ca, peers[outgoing.SecurityNone], outgoing.SecurityNone, testpeer.MITMRelay, testpeer.Issued{})
		n, _ := mitmNetwork(t, ca.Pool())
		if res := n.Check(context.Background(), mitmSettings(m, outgoing.SecurityNone), "en", 10*time.Second); !res.Report.OK {
			t.Fatalf("Check() with security none failed at %q: %+v", res.Report.Failed, lastStep(res.Report))
		}
		if found := m.CredentialsInClear(mitmLogin, mitmPassword); len(found) == 0 {
			t.Errorf("the MITM did not see the LOGIN sent in clear text: its recording misses what it should catch")
		}
	})
	for _, sec := range []outgoing.Security{outgoing.SecuritySTARTTLS, outgoing.SecuritySSL} {
		t.Run("control trusted attacker CA "+string(sec), func(t *testing.T) {
			evil := testpeer.NewCA(t)
			m := startIMAPMITM(t, ca, peers[sec], sec, testpeer.MITMCertificate, evil.Issue(t, testpeer.CertOptions{}))
			n, _ := mitmNetwork(t, evil.Pool())
			if res := n.Check(context.Background(), mitmSettings(m, sec), "en", 10*time.Second); !res.Report.OK {
				t.Fatalf("Check() trusting the attacker's CA failed at %q: %+v", res.Report.Failed, lastStep(res.Report))
			}
			if accepted, _ := m.Certificates(); accepted != 1 || len(m.CredentialsInClear(mitmLogin, mitmPassword)) == 0 {
				t.Errorf("accepted %d certificates and read %v, want 1 and the credentials", accepted, m.CredentialsInClear(mitmLogin, mitmPassword))
			}
		})
	}

	for _, c := range imapMITMCases(t, ca) {
		t.Run(c.name, func(t *testing.T) {
			m := startIMAPMITM(t, ca, peers[c.sec], c.sec, c.attack, c.cert)
			n, logs := mitmNetwork(t, ca.Pool())
			res := n.Check(context.Background(), mitmSettings(m, c.sec), "en", 10*time.Second)
			if res.Report.OK || res.Report.Failed != imapMITMStep(c.sec) {
				t.Errorf("Check() step = %q (%+v), want a failure at %q", res.Report.Failed, lastStep(res.Report), imapMITMStep(c.sec))
			}
			assertNoSecret(t, res, logs, mitmPassword)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c2, err := n.Dial(ctx, mitmSettings(m, c.sec))
			var ie *IMAPError
			if err == nil {
				_ = c2.Close()
				t.Errorf("Dial() through the man in the middle succeeded")
			} else if !errors.As(err, &ie) || ie.Step != imapMITMStep(c.sec) {
				t.Errorf("Dial() error = %v, want an *IMAPError at %q", err, imapMITMStep(c.sec))
			}
			if m.Conns() != 2 {
				t.Errorf("the man in the middle saw %d connections, want the check's and Dial's", m.Conns())
			}
			if found := m.CredentialsInClear(mitmLogin, mitmPassword); found != nil {
				t.Errorf("the man in the middle read credentials in clear text: %v\n%q", found, m.Cleartext())
			}
			if accepted, _ := m.Certificates(); accepted != 0 {
				t.Errorf("the client accepted the man in the middle's certificate %d times", accepted)
			}
		})
	}
}
