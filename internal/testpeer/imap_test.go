package testpeer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

const imapTestMessage = "From: a@example.test\r\nTo: user@example.test\r\nSubject: hello\r\nMessage-ID: <1@example.test>\r\n\r\nbody\r\n"

func TestIMAPServerOverTLS(t *testing.T) {
	t.Parallel()
	s := StartIMAP(t, nil)
	c := s.Client(t)

	list, err := c.List("", "*", nil).Collect()
	if err != nil {
		t.Fatalf("LIST: %v", err)
	}
	var names []string
	for _, mb := range list {
		names = append(names, mb.Mailbox)
	}
	if got, want := strings.Join(names, " "), "Drafts INBOX Junk Sent Trash"; got != want {
		t.Errorf("LIST = %q, want %q", got, want)
	}

	uid := imapAppend(t, c, "INBOX", imapTestMessage)
	s.Deliver(t, "INBOX", []byte(imapTestMessage), imap.FlagSeen)

	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("SELECT INBOX: %v", err)
	}
	if sel.NumMessages != 2 {
		t.Errorf("SELECT INBOX messages = %d, want 2", sel.NumMessages)
	}
	body := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{body}}).Collect()
	if err != nil {
		t.Fatalf("FETCH: %v", err)
	}
	if len(msgs) != 1 || string(msgs[0].FindBodySection(body)) != imapTestMessage {
		t.Errorf("FETCH UID %d = %v, want the appended message", uid, msgs)
	}
}

func TestIMAPServerRefusesWrongPasswordAndUntrustedClients(t *testing.T) {
	t.Parallel()
	s := StartIMAP(t, &IMAPOptions{User: "alice@example.test", Password: "right"})

	c := s.Dial(t, nil)
	err := c.Login("alice@example.test", "wrong").Wait()
	var imapErr *imap.Error
	if !errors.As(err, &imapErr) || imapErr.Code != imap.ResponseCodeAuthenticationFailed {
		t.Errorf("LOGIN with a wrong password = %v, want NO [AUTHENTICATIONFAILED]", err)
	}

	// A client that trusts nothing (empty pool) or the system roots fails
	// the handshake: the certificate comes from the test CA only.
	for name, cfg := range map[string]*tls.Config{
		"empty pool": {RootCAs: x509.NewCertPool(), ServerName: "localhost"},
		"other CA":   NewCA(t).ClientTLS("localhost"),
		"wrong name": s.CA().ClientTLS("imap.example.test"),
	} {
		c, err := imapclient.DialTLS(s.Addr(), &imapclient.Options{TLSConfig: cfg})
		if err == nil {
			c.Close()
			t.Errorf("DialTLS with %s succeeded, want a certificate error", name)
			continue
		}
		if !imapIsCertError(err) {
			t.Errorf("DialTLS with %s = %v, want a certificate error", name, err)
		}
	}
}

func TestIMAPServerStartTLSAndPlain(t *testing.T) {
	t.Parallel()
	t.Run("starttls", func(t *testing.T) {
		t.Parallel()
		s := StartIMAP(t, &IMAPOptions{StartTLS: true})
		plain, err := imapclient.DialInsecure(s.Addr(), nil)
		if err != nil {
			t.Fatalf("DialInsecure: %v", err)
		}
		defer plain.Close()
		if err := plain.Login(s.User(), s.Password()).Wait(); err == nil {
			t.Error("LOGIN before STARTTLS succeeded, want it refused")
		}
		c := s.Client(t) // STARTTLS, verified
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Errorf("SELECT after STARTTLS: %v", err)
		}
	})
	t.Run("plain", func(t *testing.T) {
		t.Parallel()
		s := StartIMAP(t, &IMAPOptions{Plain: true})
		c := s.Client(t)
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Errorf("SELECT over plain IMAP: %v", err)
		}
	})
	t.Run("self-signed", func(t *testing.T) {
		t.Parallel()
		leaf := SelfSigned(t, CertOptions{})
		s := StartIMAP(t, &IMAPOptions{TLS: &tls.Config{Certificates: []tls.Certificate{leaf.TLS}}})
		c, err := imapclient.DialTLS(s.Addr(), &imapclient.Options{TLSConfig: s.CA().ClientTLS(s.TLSServerName())})
		if err == nil {
			c.Close()
			t.Fatal("DialTLS to a self-signed server succeeded, want a certificate error")
		}
		if !imapIsCertError(err) {
			t.Errorf("DialTLS to a self-signed server = %v, want a certificate error", err)
		}
	})
}

func TestIMAPServerKick(t *testing.T) {
	t.Parallel()
	s := StartIMAP(t, nil)
	c := s.Client(t)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatalf("SELECT: %v", err)
	}
	if got := s.Kick(); got != 1 {
		t.Errorf("Kick() = %d, want 1", got)
	}
	<-c.Closed()
	if err := c.Noop().Wait(); err == nil {
		t.Error("NOOP after Kick succeeded, want an error")
	}
	// The server keeps listening.
	if _, err := s.Client(t).Select("INBOX", nil).Wait(); err != nil {
		t.Errorf("SELECT on a new connection after Kick: %v", err)
	}
}

// TestIMAPServerCleanupClosesEverything: the subtest's Cleanup fails it if
// a session outlives the server. (Whether the port refuses connections
// afterwards is not asserted: another test may already have been given the
// same ephemeral port.)
func TestIMAPServerCleanupClosesEverything(t *testing.T) {
	t.Parallel()
	t.Run("run", func(t *testing.T) {
		s := StartIMAP(t, nil)
		c := s.Client(t)
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatalf("SELECT: %v", err)
		}
		s.Dial(t, nil)                        // greeted, never logged in
		raw, err := net.Dial("tcp", s.Addr()) // not even a TLS handshake
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { _ = raw.Close() })
	})
}

func imapAppend(t *testing.T, c *imapclient.Client, folder, msg string) imap.UID {
	t.Helper()
	cmd := c.Append(folder, int64(len(msg)), nil)
	if _, err := io.WriteString(cmd, msg); err != nil {
		t.Fatalf("APPEND %s: %v", folder, err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatalf("APPEND %s: %v", folder, err)
	}
	data, err := cmd.Wait()
	if err != nil {
		t.Fatalf("APPEND %s: %v", folder, err)
	}
	return data.UID
}

func imapHasAttr(attrs []imap.MailboxAttr, want imap.MailboxAttr) bool {
	for _, a := range attrs {
		if strings.EqualFold(string(a), string(want)) {
			return true
		}
	}
	return false
}

func imapIsCertError(err error) bool {
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var verify *tls.CertificateVerificationError
	return errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &verify)
}
