package imapsync

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/mailbox"
	"github.com/mailsync/mailsync/outgoing"
)

const (
	mitmLogin    = "mitm@example.test"
	mitmPassword = "Mitm-Sync-Pa55word"
)

// TestMITMSyncConnection points a stored mailbox at a man in the middle
// in front of an in-process IMAP server and runs a sync pass, as the
// engine's workers do. Through a relay the pass stores the message; under
// every attack (STARTTLS stripped or refused; a self-signed, expired,
// wrong-host or unknown-CA certificate after STARTTLS and on implicit TLS)
// the connection fails at tls or starttls, nothing is stored, the MITM
// reads no form of the password and no LOGIN, and no certificate of its is
// accepted.
func TestMITMSyncConnection(t *testing.T) {
	ca := testpeer.NewCA(t)
	opts := func(starttls bool) *testpeer.IMAPOptions {
		return &testpeer.IMAPOptions{CA: ca, StartTLS: starttls, User: mitmLogin, Password: mitmPassword}
	}
	peers := map[outgoing.Security]*testpeer.IMAPServer{
		outgoing.SecuritySSL:      testpeer.StartIMAP(t, opts(false)),
		outgoing.SecuritySTARTTLS: testpeer.StartIMAP(t, opts(true)),
	}
	for _, p := range peers {
		p.Deliver(t, "INBOX", genMessage(1, 500))
	}
	v := newTestEnv(t, storetest.Open(t, store.SQLite), ca, Config{})

	type attack struct {
		name   string
		sec    outgoing.Security
		attack testpeer.MITMAttack
		cert   testpeer.Issued
	}
	certs := map[string]testpeer.Issued{
		"self-signed": testpeer.SelfSigned(t, testpeer.CertOptions{}),
		"expired": ca.Issue(t, testpeer.CertOptions{
			NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour),
		}),
		"wrong host": ca.Issue(t, testpeer.CertOptions{Names: []string{"mail.other.example"}}),
		"unknown CA": testpeer.NewCA(t).Issue(t, testpeer.CertOptions{}),
	}
	cases := []attack{
		{"starttls stripped", outgoing.SecuritySTARTTLS, testpeer.MITMStripSTARTTLS, testpeer.Issued{}},
		{"starttls refused", outgoing.SecuritySTARTTLS, testpeer.MITMRefuseSTARTTLS, testpeer.Issued{}},
	}
	names := make([]string, 0, len(certs))
	for n := range certs {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, sec := range []outgoing.Security{outgoing.SecuritySTARTTLS, outgoing.SecuritySSL} {
		for _, n := range names {
			cases = append(cases, attack{string(sec) + " " + n, sec, testpeer.MITMCertificate, certs[n]})
		}
	}

	// mailboxVia stores a mailbox whose IMAP server is m, without a check,
	// as insertMailbox does (under an address of its own: one per case).
	boxes := 0
	mailboxVia := func(t *testing.T, m *testpeer.MITM, sec outgoing.Security) mailbox.Mailbox {
		t.Helper()
		boxes++
		return v.insertMailboxAs(t, fmt.Sprintf("box%d@example.test", boxes), "localhost", m.Port(), sec, mitmLogin, mitmPassword)
	}
	stored := func(t *testing.T, id int64) int64 {
		t.Helper()
		var n int64
		if err := v.db.Gorm.Model(&messageRow{}).Where("mailbox_id = ?", id).Count(&n).Error; err != nil {
			t.Fatal(err)
		}
		return n
	}
	start := func(t *testing.T, sec outgoing.Security, a testpeer.MITMAttack, cert testpeer.Issued) *testpeer.MITM {
		return testpeer.StartMITM(t, testpeer.MITMOptions{
			Protocol: testpeer.MITMIMAP, Attack: a, Upstream: peers[sec].Addr(),
			ImplicitTLS: sec == outgoing.SecuritySSL, Cert: cert, UpstreamTLS: ca.ClientTLS("localhost"),
		})
	}

	for _, sec := range []outgoing.Security{outgoing.SecuritySTARTTLS, outgoing.SecuritySSL} {
		t.Run("control relay "+string(sec), func(t *testing.T) {
			m := start(t, sec, testpeer.MITMRelay, testpeer.Issued{})
			mb := mailboxVia(t, m, sec)
			if _, err := v.eng.SyncOnce(context.Background(), mb.ID); err != nil {
				t.Fatalf("SyncOnce() through a relay = %v", err)
			}
			if n := stored(t, mb.ID); n != 1 {
				t.Errorf("%d messages stored through a relay, want 1", n)
			}
			if found := m.CredentialsInClear(mitmLogin, mitmPassword); found != nil {
				t.Errorf("the relay read credentials: %v", found)
			}
		})
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := start(t, c.sec, c.attack, c.cert)
			mb := mailboxVia(t, m, c.sec)
			_, err := v.eng.SyncOnce(context.Background(), mb.ID)
			want := outgoing.StepSTARTTLS
			if c.sec == outgoing.SecuritySSL {
				want = outgoing.StepTLS
			}
			var ie *mailbox.IMAPError
			if !errors.As(err, &ie) || ie.Step != want {
				t.Errorf("SyncOnce() = %v, want an *IMAPError at %q", err, want)
			}
			if m.Conns() == 0 {
				t.Errorf("the sync never reached the man in the middle")
			}
			if n := stored(t, mb.ID); n != 0 {
				t.Errorf("%d messages stored through the man in the middle", n)
			}
			if found := m.CredentialsInClear(mitmLogin, mitmPassword); found != nil {
				t.Errorf("the man in the middle read credentials in clear text: %v\n%q", found, m.Cleartext())
			}
			if accepted, _ := m.Certificates(); accepted != 0 {
				t.Errorf("the sync accepted the man in the middle's certificate %d times", accepted)
			}
		})
	}
}
