package testpeer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// dovecotTestTimeout bounds waits for Dovecot's asynchronous answers.
const dovecotTestTimeout = 10 * time.Second

// TestDovecotLogsInOverVerifiedTLS is what CI points at to prove the Dovecot
// peer logs in over verified TLS.
func TestDovecotLogsInOverVerifiedTLS(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, nil)
	d.AddUser(t, "alice@example.test", "alice-pw")

	// By hand, to look at the handshake: the chain must end at the test CA.
	conn, err := tls.Dial("tcp", d.TLSAddr(), d.CA().ClientTLS(d.TLSServerName()))
	if err != nil {
		t.Fatalf("tls.Dial %s: %v", d.TLSAddr(), err)
	}
	state := conn.ConnectionState()
	if !state.HandshakeComplete || len(state.VerifiedChains) == 0 {
		t.Fatalf("TLS state: handshake complete %v, %d verified chains; want complete and verified", state.HandshakeComplete, len(state.VerifiedChains))
	}
	if chain := state.VerifiedChains[0]; !chain[len(chain)-1].Equal(d.CA().Cert) {
		t.Errorf("verified chain ends at %q, want the test CA", chain[len(chain)-1].Subject)
	}
	c := imapclient.New(conn, nil)
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Login("alice@example.test", "alice-pw").Wait(); err != nil {
		t.Fatalf("LOGIN over TLS: %v", err)
	}
	// c.State() may lag behind Wait (go-imap beta.8 signals the command
	// before it updates the state); SELECT needs the authenticated state.
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Errorf("SELECT INBOX after LOGIN over TLS: %v", err)
	}

	// The helper does the same and checks the chain itself.
	if _, err := d.Client(t, "alice@example.test", "alice-pw").Select("INBOX", nil).Wait(); err != nil {
		t.Errorf("SELECT INBOX: %v", err)
	}

	for name, cfg := range map[string]*tls.Config{
		"empty pool": {RootCAs: x509.NewCertPool(), ServerName: d.TLSServerName()},
		"other CA":   NewCA(t).ClientTLS(d.TLSServerName()),
		"wrong name": d.CA().ClientTLS("imap.example.test"),
	} {
		c, err := imapclient.DialTLS(d.TLSAddr(), &imapclient.Options{TLSConfig: cfg})
		if err == nil {
			c.Close()
			t.Errorf("DialTLS with %s succeeded, want a certificate error", name)
		} else if !imapIsCertError(err) {
			t.Errorf("DialTLS with %s = %v, want a certificate error", name, err)
		}
	}
}

func TestDovecotPlainPortAndWrongPassword(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, nil)
	d.AddUser(t, "bob@example.test", "bob-pw")

	plain, err := imapclient.DialInsecure(d.PlainAddr(), nil)
	if err != nil {
		t.Fatalf("DialInsecure %s: %v", d.PlainAddr(), err)
	}
	t.Cleanup(func() { _ = plain.Close() })
	if !plain.Caps().Has(imap.CapStartTLS) {
		t.Errorf("plain port capabilities %v, want STARTTLS", plain.Caps())
	}
	if err := plain.Login("bob@example.test", "bob-pw").Wait(); err != nil {
		t.Fatalf("LOGIN on the plain port: %v", err)
	}

	starttls, err := imapclient.DialStartTLS(d.PlainAddr(), &imapclient.Options{TLSConfig: d.CA().ClientTLS(d.TLSServerName())})
	if err != nil {
		t.Fatalf("DialStartTLS %s: %v", d.PlainAddr(), err)
	}
	t.Cleanup(func() { _ = starttls.Close() })
	if err := starttls.Login("bob@example.test", "bob-pw").Wait(); err != nil {
		t.Fatalf("LOGIN after STARTTLS: %v", err)
	}

	for _, tc := range []struct{ login, password string }{
		{"bob@example.test", "wrong"},
		{"nobody@example.test", "bob-pw"},
	} {
		c := d.Dial(t, nil)
		err := c.Login(tc.login, tc.password).Wait()
		var imapErr *imap.Error
		if !errors.As(err, &imapErr) || imapErr.Code != imap.ResponseCodeAuthenticationFailed {
			t.Errorf("LOGIN %s/%s = %v, want NO [AUTHENTICATIONFAILED]", tc.login, tc.password, err)
		}
	}
}

func TestDovecotSpecialUseAndCapabilities(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, nil)
	d.AddUser(t, "carol@example.test", "carol-pw")
	c := d.Client(t, "carol@example.test", "carol-pw")

	caps, err := c.Capability().Wait()
	if err != nil {
		t.Fatalf("CAPABILITY: %v", err)
	}
	for _, want := range []imap.Cap{imap.CapCondStore, imap.CapQResync, imap.CapIdle, imap.CapSpecialUse, imap.CapMove, imap.CapUIDPlus, imap.CapEnable} {
		if !caps.Has(want) {
			t.Errorf("CAPABILITY lacks %s: %v", want, caps)
		}
	}

	list, err := c.List("", "*", &imap.ListOptions{ReturnSpecialUse: true}).Collect()
	if err != nil {
		t.Fatalf("LIST: %v", err)
	}
	attrs := map[string][]imap.MailboxAttr{}
	for _, mb := range list {
		attrs[mb.Mailbox] = mb.Attrs
		if mb.Delim != '/' {
			t.Errorf("LIST %s delimiter %q, want '/'", mb.Mailbox, mb.Delim)
		}
	}
	for folder, want := range map[string]imap.MailboxAttr{
		"Sent":   imap.MailboxAttrSent,
		"Drafts": imap.MailboxAttrDrafts,
		"Trash":  imap.MailboxAttrTrash,
		"Junk":   imap.MailboxAttrJunk,
	} {
		if !imapHasAttr(attrs[folder], want) {
			t.Errorf("LIST %s attributes %v, want %s", folder, attrs[folder], want)
		}
	}
	if _, ok := attrs["INBOX"]; !ok {
		t.Errorf("LIST = %v, want INBOX", list)
	}
}

func TestDovecotDeliver(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, nil)
	const login = "dave@example.test"
	d.AddUser(t, login, "dave-pw")

	const n = 2000
	begin := time.Now()
	for i := range n {
		var flags []imap.Flag
		if i%2 == 0 {
			flags = []imap.Flag{imap.FlagSeen}
		}
		d.Deliver(t, login, "INBOX", dovecotTestMessage(i), flags...)
	}
	t.Logf("Deliver: %d messages in %v", n, time.Since(begin).Round(time.Millisecond))
	archived := d.Deliver(t, login, "Archive/2024", dovecotTestMessage(n), imap.FlagFlagged, imap.FlagAnswered)
	received := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	if err := os.Chtimes(archived, received, received); err != nil {
		t.Fatalf("set INTERNALDATE: %v", err)
	}
	d.Deliver(t, login, "Entwürfe & Notizen", dovecotTestMessage(n+1))

	c := d.Client(t, login, "dave-pw")
	begin = time.Now()
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("SELECT INBOX: %v", err)
	}
	t.Logf("first SELECT of %d delivered messages: %v", n, time.Since(begin).Round(time.Millisecond))
	if sel.NumMessages != n {
		t.Errorf("SELECT INBOX messages = %d, want %d", sel.NumMessages, n)
	}
	unseen, err := c.UIDSearch(&imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagSeen}}, nil).Wait()
	if err != nil {
		t.Fatalf("SEARCH UNSEEN: %v", err)
	}
	if got := len(unseen.AllUIDs()); got != n/2 {
		t.Errorf("SEARCH UNSEEN = %d messages, want %d", got, n/2)
	}
	// One more by IMAP APPEND, and the size Dovecot reports is the CRLF size.
	imapAppend(t, c, "INBOX", imapTestMessage)
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{RFC822Size: true, Flags: true}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("FETCH 1 = %v, %v", msgs, err)
	}
	if want := int64(maildirCRLFSize(dovecotTestMessage(0))); msgs[0].RFC822Size != want {
		t.Errorf("FETCH 1 RFC822.SIZE = %d, want %d", msgs[0].RFC822Size, want)
	}
	if !imapHasFlag(msgs[0].Flags, imap.FlagSeen) {
		t.Errorf("FETCH 1 FLAGS = %v, want \\Seen", msgs[0].Flags)
	}

	for folder, want := range map[string]uint32{"Archive/2024": 1, "Entwürfe & Notizen": 1} {
		sel, err := c.Select(folder, nil).Wait()
		if err != nil {
			t.Errorf("SELECT %q: %v", folder, err)
			continue
		}
		if sel.NumMessages != want {
			t.Errorf("SELECT %q messages = %d, want %d", folder, sel.NumMessages, want)
		}
	}
	msgs, err = c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Flags: true}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("FETCH 1 = %v, %v", msgs, err)
	}
	if imapHasFlag(msgs[0].Flags, imap.FlagSeen) {
		t.Errorf("FETCH 1 FLAGS in %q = %v, want no \\Seen", "Entwürfe & Notizen", msgs[0].Flags)
	}
	if _, err := c.Select("Archive/2024", nil).Wait(); err != nil {
		t.Fatalf("SELECT Archive/2024: %v", err)
	}
	msgs, err = c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Flags: true, InternalDate: true}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("FETCH 1 = %v, %v", msgs, err)
	}
	if !msgs[0].InternalDate.Equal(received) {
		t.Errorf("FETCH 1 INTERNALDATE in Archive/2024 = %v, want %v (the file's mtime)", msgs[0].InternalDate, received)
	}
	if !imapHasFlag(msgs[0].Flags, imap.FlagFlagged) || !imapHasFlag(msgs[0].Flags, imap.FlagAnswered) {
		t.Errorf("FETCH 1 FLAGS in Archive/2024 = %v, want \\Flagged \\Answered", msgs[0].Flags)
	}
}

func TestDovecotSetPasswordAndSeveralUsers(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, nil)
	d.AddUser(t, "erin@example.test", "old:pw")
	d.AddUser(t, "frank@example.test", "frank-pw")
	d.Deliver(t, "frank@example.test", "INBOX", dovecotTestMessage(1))

	open := d.Client(t, "erin@example.test", "old:pw")
	d.SetPassword(t, "erin@example.test", "new-pw") // same length, same second

	c := d.Dial(t, nil)
	if err := c.Login("erin@example.test", "old:pw").Wait(); err == nil {
		t.Error("LOGIN with the old password succeeded after SetPassword")
	}
	d.Client(t, "erin@example.test", "new-pw")
	if err := open.Noop().Wait(); err != nil {
		t.Errorf("NOOP on a session opened before SetPassword: %v", err)
	}

	// Users are apart: frank's message is not in erin's INBOX.
	for login, want := range map[string]uint32{"erin@example.test": 0, "frank@example.test": 1} {
		pw := map[string]string{"erin@example.test": "new-pw", "frank@example.test": "frank-pw"}[login]
		sel, err := d.Client(t, login, pw).Select("INBOX", nil).Wait()
		if err != nil {
			t.Fatalf("SELECT INBOX as %s: %v", login, err)
		}
		if sel.NumMessages != want {
			t.Errorf("SELECT INBOX as %s messages = %d, want %d", login, sel.NumMessages, want)
		}
	}
}

func TestDovecotKick(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, nil)
	d.AddUser(t, "gina@example.test", "gina-pw")
	d.AddUser(t, "hank@example.test", "hank-pw")
	c1 := d.Client(t, "gina@example.test", "gina-pw")
	c2 := d.Client(t, "gina@example.test", "gina-pw")
	other := d.Client(t, "hank@example.test", "hank-pw")
	if _, err := c1.Select("INBOX", nil).Wait(); err != nil {
		t.Fatalf("SELECT: %v", err)
	}

	if got := d.Kick(t, "gina@example.test"); got != 2 {
		t.Errorf("Kick() = %d, want 2", got)
	}
	for i, c := range []*imapclient.Client{c1, c2} {
		if err := c.Noop().Wait(); err == nil {
			t.Errorf("NOOP on kicked client %d succeeded, want an error", i+1)
		}
	}
	if err := other.Noop().Wait(); err != nil {
		t.Errorf("NOOP on another user's client: %v", err)
	}
	if got := d.Kick(t, "gina@example.test"); got != 0 {
		t.Errorf("Kick() with no connection = %d, want 0", got)
	}
	// Logging in again works.
	if err := d.Client(t, "gina@example.test", "gina-pw").Noop().Wait(); err != nil {
		t.Errorf("NOOP after a new login: %v", err)
	}
}

func TestDovecotRecreateFolderChangesUIDValidity(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, nil)
	const login = "ivy@example.test"
	d.AddUser(t, login, "ivy-pw")
	d.Doveadm(t, "mailbox", "create", "-u", login, "Projects")
	c := d.Client(t, login, "ivy-pw")
	status := func() uint32 {
		t.Helper()
		st, err := c.Status("Projects", &imap.StatusOptions{UIDValidity: true}).Wait()
		if err != nil {
			t.Fatalf("STATUS Projects: %v", err)
		}
		return st.UIDValidity
	}
	before := status()
	d.Doveadm(t, "mailbox", "delete", "-u", login, "Projects")
	d.Doveadm(t, "mailbox", "create", "-u", login, "Projects")
	if after := status(); after == before {
		t.Errorf("UIDVALIDITY after delete and create = %d, want it changed from %d", after, before)
	}

	// Deliver notices a folder deleted behind its back and recreates it.
	d.Deliver(t, login, "Projects", dovecotTestMessage(1))
	d.Doveadm(t, "mailbox", "delete", "-u", login, "Projects")
	d.Deliver(t, login, "Projects", dovecotTestMessage(2))
	st, err := c.Status("Projects", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil {
		t.Fatalf("STATUS Projects: %v", err)
	}
	if st.NumMessages == nil || *st.NumMessages != 1 {
		t.Errorf("STATUS Projects MESSAGES = %v, want 1", st.NumMessages)
	}
}

func TestDovecotIdleHearsDelivery(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, nil)
	const login = "jack@example.test"
	d.AddUser(t, login, "jack-pw")
	exists := make(chan uint32, 16)
	c := d.Dial(t, &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Mailbox: func(data *imapclient.UnilateralDataMailbox) {
			if data.NumMessages != nil {
				exists <- *data.NumMessages
			}
		},
	}})
	if err := c.Login(login, "jack-pw").Wait(); err != nil {
		t.Fatalf("LOGIN: %v", err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatalf("SELECT: %v", err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatalf("IDLE: %v", err)
	}
	d.Deliver(t, login, "INBOX", dovecotTestMessage(1))
	select {
	case n := <-exists:
		if n != 1 {
			t.Errorf("EXISTS during IDLE = %d, want 1", n)
		}
	case <-time.After(dovecotTestTimeout):
		t.Errorf("no EXISTS within %v of a delivery during IDLE", dovecotTestTimeout)
	}
	if err := idle.Close(); err != nil {
		t.Fatalf("DONE: %v", err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatalf("IDLE: %v", err)
	}
}

func TestDovecotExtraConfig(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, &DovecotOptions{Config: "protocol imap {\n  mail_max_userip_connections = 1\n}"})
	d.AddUser(t, "lou@example.test", "lou-pw")
	first := d.Client(t, "lou@example.test", "lou-pw")
	err := d.Dial(t, nil).Login("lou@example.test", "lou-pw").Wait()
	var imapErr *imap.Error
	if !errors.As(err, &imapErr) || imapErr.Code != imap.ResponseCodeLimit {
		t.Errorf("second LOGIN with mail_max_userip_connections = 1: %v, want NO [LIMIT]", err)
	}
	if err := first.Noop().Wait(); err != nil {
		t.Errorf("NOOP on the first connection: %v", err)
	}
}

func TestModifiedUTF7(t *testing.T) {
	for in, want := range map[string]string{
		"INBOX":              "INBOX",
		"A&B":                "A&-B",
		"Entwürfe":           "Entw&APw-rfe",
		"日本語":                "&ZeVnLIqe-",
		"Отправленные":       "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-",
		"Entwürfe & Notizen": "Entw&APw-rfe &- Notizen",
	} {
		if got := modifiedUTF7(in); got != want {
			t.Errorf("modifiedUTF7(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMaildirInfo(t *testing.T) {
	for _, tc := range []struct {
		flags []imap.Flag
		want  string
		err   bool
	}{
		{nil, "", false},
		{[]imap.Flag{imap.FlagSeen}, "S", false},
		{[]imap.Flag{imap.FlagSeen, imap.FlagDraft, imap.FlagFlagged, imap.FlagAnswered, imap.FlagDeleted}, "DFRST", false},
		{[]imap.Flag{"\\SEEN", imap.FlagSeen}, "S", false},
		{[]imap.Flag{"$Forwarded"}, "", true},
	} {
		got, err := maildirInfo(tc.flags)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("maildirInfo(%v) = %q, %v; want %q, error %v", tc.flags, got, err, tc.want, tc.err)
		}
	}
}

func dovecotTestMessage(i int) []byte {
	return fmt.Appendf(nil, "From: sender@example.test\nTo: user@example.test\nSubject: message %d\nMessage-ID: <%d@example.test>\nDate: Mon, 02 Jan 2006 15:04:05 +0000\n\nbody %d\n", i, i, i)
}

func imapHasFlag(flags []imap.Flag, want imap.Flag) bool {
	for _, f := range flags {
		if strings.EqualFold(string(f), string(want)) {
			return true
		}
	}
	return false
}
