package imapsync

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailsync/mailsync/internal/netguard"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/mailbox"
	"github.com/mailsync/mailsync/outgoing"
)

// owner is the portal user who connects the test mailboxes.
var owner = outgoing.Caller{UserID: 1, Lang: "en"}

// testEnv is a database, a mailbox service and an engine.
type testEnv struct {
	db  *store.DB
	box *secret.Box
	net *mailbox.IMAPNetwork
	mbs *mailbox.Service
	eng *Engine
}

// testLogger logs at debug level and fails the test when a record holds
// a form of the suite's passwords (testpeer.CanaryHandler); with
// MAILSYNC_TEST_LOG set it also prints them.
func testLogger(t testing.TB) *slog.Logger {
	var next slog.Handler = slog.DiscardHandler
	if os.Getenv("MAILSYNC_TEST_LOG") != "" {
		next = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	return slog.New(testpeer.CanaryHandler(t, next, []string{annLogin}, annPass, mitmPassword, hostilePassword))
}

// newTestEnv builds the services on db, trusting ca, with the engine
// configured by cfg (fast backoff unless set).
func newTestEnv(t testing.TB, db *store.DB, ca *testpeer.CA, cfg Config) *testEnv {
	t.Helper()
	if err := db.Gorm.Exec("INSERT INTO users (id, email, name, admin, created_at) VALUES (?, ?, '', ?, ?) ON CONFLICT DO NOTHING",
		1, "owner@example.com", false, time.Now().UTC()).Error; err != nil {
		t.Fatal(err)
	}
	keyText, _ := secret.GenerateKey()
	key, _ := secret.ParseKey(keyText)
	box := secret.NewBox(key)
	return newTestEnvWithBox(t, db, ca, box, cfg)
}

func newTestEnvWithBox(t testing.TB, db *store.DB, ca *testpeer.CA, box *secret.Box, cfg Config) *testEnv {
	t.Helper()
	dialer := &netguard.Dialer{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	log := testLogger(t)
	out := outgoing.NewService(outgoing.Deps{DB: db, Box: box, Logger: log,
		Network: &outgoing.Network{Dialer: dialer, RootCAs: ca.Pool(), HelloName: "mailsync.test", Logger: log}},
		outgoing.Config{CheckTimeout: 5 * time.Second})
	net := &mailbox.IMAPNetwork{Dialer: dialer, RootCAs: ca.Pool(), Logger: log}
	mbs := mailbox.NewService(mailbox.Deps{DB: db, Box: box, Outgoing: out, IMAP: net, Logger: log},
		mailbox.Config{CheckTimeout: 10 * time.Second})
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin, cfg.BackoffMax = 50*time.Millisecond, 500*time.Millisecond
	}
	eng := New(Deps{DB: db, Mailboxes: mbs, Logger: log}, cfg)
	return &testEnv{db: db, box: box, net: net, mbs: mbs, eng: eng}
}

// connect connects login's mailbox on dv and selects folders besides the
// defaults (INBOX and Sent).
func (v *testEnv) connect(t testing.TB, dv *testpeer.Dovecot, login, password string, folders ...string) mailbox.Mailbox {
	t.Helper()
	return v.connectAt(t, "localhost", dv.TLSPort(), login, password, folders...)
}

func (v *testEnv) connectAt(t testing.TB, host string, port int, login, password string, folders ...string) mailbox.Mailbox {
	t.Helper()
	ctx := context.Background()
	mb, res, err := v.mbs.Connect(ctx, owner, mailbox.ConnectInput{
		Email: login, Password: secret.Secret(password),
		IMAP: &mailbox.IMAPEndpoint{Host: host, Port: port, Security: outgoing.SecuritySSL, Login: login},
	})
	if err != nil {
		t.Fatalf("Connect(%s) = %v; report %+v", login, err, res.Report)
	}
	if len(folders) > 0 {
		names := append([]string{"INBOX"}, folders...)
		if _, err := v.mbs.SetFolders(ctx, owner, mb.ID, names); err != nil {
			t.Fatalf("SetFolders(%v) = %v", names, err)
		}
	}
	return mb
}

// insertMailbox stores a mailbox directly, without the IMAP check that
// Connect runs (and rate-limits), with INBOX selected.
func (v *testEnv) insertMailbox(t testing.TB, host string, port int, login, password string) mailbox.Mailbox {
	t.Helper()
	return v.insertMailboxAs(t, login, host, port, outgoing.SecuritySSL, login, password)
}

// insertMailboxAs is insertMailbox for a mailbox address other than the
// login and any security.
func (v *testEnv) insertMailboxAs(t testing.TB, email, host string, port int, sec outgoing.Security, login, password string) mailbox.Mailbox {
	t.Helper()
	now := time.Now().UTC()
	mb := mailbox.Mailbox{UserID: owner.UserID, Email: email, IMAPHost: host, IMAPPort: port, IMAPSecurity: sec,
		IMAPLogin: login, SyncState: StatePending, SettingsVersion: 1, CreatedAt: now, UpdatedAt: now}
	if err := v.db.Gorm.Create(&mb).Error; err != nil {
		t.Fatal(err)
	}
	sealed, err := v.box.SealSecret(secret.Secret(password), secret.AAD("mailboxes", "imap_password", mb.ID))
	if err != nil {
		t.Fatal(err)
	}
	mb.IMAPPassword = sealed
	if err := v.db.Gorm.Model(&mb).Update("imap_password", sealed).Error; err != nil {
		t.Fatal(err)
	}
	f := mailbox.FolderRow{MailboxID: mb.ID, Name: "INBOX", Delimiter: "/", Selected: true, CreatedAt: now}
	if err := v.db.Gorm.Create(&f).Error; err != nil {
		t.Fatal(err)
	}
	return mb
}

// folderRow reads a folder's row.
func (v *testEnv) folderRow(t testing.TB, mailboxID int64, name string) mailbox.FolderRow {
	t.Helper()
	var f mailbox.FolderRow
	if err := v.db.Gorm.Where("mailbox_id = ? AND name = ?", mailboxID, name).Take(&f).Error; err != nil {
		t.Fatalf("folder %q: %v", name, err)
	}
	return f
}

// msgState is a message as compared between server and database.
type msgState struct {
	flags string
	sum   [32]byte
	size  int
}

func (m msgState) String() string {
	return fmt.Sprintf("flags %q, %d bytes, sha256 %x", m.flags, m.size, m.sum[:6])
}

// serverState reads every message of folder from the server: UID, flags
// and the hash of its bytes, streaming the bodies.
func serverState(t testing.TB, c *imapclient.Client, folder string) (uint32, map[uint32]msgState) {
	t.Helper()
	sel, err := c.Select(folder, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatalf("select %q: %v", folder, err)
	}
	out := map[uint32]msgState{}
	if sel.NumMessages == 0 {
		return sel.UIDValidity, out
	}
	cmd := c.Fetch(imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}, &imap.FetchOptions{
		UID: true, Flags: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}},
	})
	for {
		msg := cmd.Next()
		if msg == nil {
			break
		}
		var uid uint32
		var st msgState
		for item := msg.Next(); item != nil; item = msg.Next() {
			switch it := item.(type) {
			case imapclient.FetchItemDataUID:
				uid = uint32(it.UID)
			case imapclient.FetchItemDataFlags:
				st.flags = flagString(it.Flags)
			case imapclient.FetchItemDataBodySection:
				h := sha256.New()
				n, _ := io.Copy(h, it.Literal)
				copy(st.sum[:], h.Sum(nil))
				st.size = int(n)
			}
		}
		out[uid] = st
	}
	if err := cmd.Close(); err != nil {
		t.Fatalf("fetch %q: %v", folder, err)
	}
	return sel.UIDValidity, out
}

// dbState reads the stored messages of a folder the same way.
func (v *testEnv) dbState(t testing.TB, mailboxID int64, folder string) (uint32, map[uint32]msgState) {
	t.Helper()
	f := v.folderRow(t, mailboxID, folder)
	rows, err := v.db.Gorm.Model(&messageRow{}).Select("uidvalidity", "uid", "flags", "raw_codec", "raw").Where("folder_id = ?", f.ID).Rows()
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[uint32]msgState{}
	for rows.Next() {
		var (
			uv, uid uint32
			flags   string
			codec   string
			raw     []byte
		)
		if err := rows.Scan(&uv, &uid, &flags, &codec, &raw); err != nil {
			t.Fatal(err)
		}
		if uv != f.UIDValidity {
			t.Errorf("folder %q: row uid %d has UIDVALIDITY %d, the folder %d", folder, uid, uv, f.UIDValidity)
		}
		if _, dup := out[uid]; dup {
			t.Errorf("folder %q: uid %d stored twice", folder, uid)
		}
		zr, err := openRaw(codec, raw)
		if err != nil {
			t.Fatalf("uid %d: raw (%s) does not open: %v", uid, codec, err)
		}
		h := sha256.New()
		n, err := io.Copy(h, zr)
		if err != nil {
			t.Fatalf("uid %d: raw: %v", uid, err)
		}
		st := msgState{flags: flags, size: int(n)}
		copy(st.sum[:], h.Sum(nil))
		out[uid] = st
	}
	return f.UIDValidity, out
}

// assertConverged compares the folder on the server with the database.
func (v *testEnv) assertConverged(t testing.TB, c *imapclient.Client, mailboxID int64, folder string) int {
	t.Helper()
	suv, server := serverState(t, c, folder)
	duv, stored := v.dbState(t, mailboxID, folder)
	if suv != duv {
		t.Errorf("folder %q: UIDVALIDITY stored %d, server %d", folder, duv, suv)
	}
	bad := 0
	for uid, s := range server {
		d, ok := stored[uid]
		switch {
		case !ok:
			if bad++; bad <= 5 {
				t.Errorf("folder %q: uid %d on the server (%v) is not stored", folder, uid, s)
			}
		case d != s:
			if bad++; bad <= 5 {
				t.Errorf("folder %q: uid %d stored %v, server %v", folder, uid, d, s)
			}
		}
	}
	for uid, d := range stored {
		if _, ok := server[uid]; !ok {
			if bad++; bad <= 5 {
				t.Errorf("folder %q: uid %d stored (%v) but not on the server", folder, uid, d)
			}
		}
	}
	if bad > 5 {
		t.Errorf("folder %q: %d differences in all", folder, bad)
	}
	f := v.folderRow(t, mailboxID, folder)
	if f.Total != len(server) || f.Synced != len(stored) {
		t.Errorf("folder %q: total/synced = %d/%d, want %d/%d", folder, f.Total, f.Synced, len(server), len(stored))
	}
	return len(server)
}

// genMessage makes message i: a realistic mix of plain, HTML, multipart
// with an attachment, encoded subjects and charsets; about size bytes.
func genMessage(i, size int) []byte {
	var b strings.Builder
	date := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Minute)
	fmt.Fprintf(&b, "Date: %s\r\n", date.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "From: \"Sender %d\" <sender%d@example.org>\r\n", i%37, i%37)
	fmt.Fprintf(&b, "To: ann@example.test, \"Bob\" <bob@example.test>\r\n")
	fmt.Fprintf(&b, "Message-ID: <msg-%d@example.org>\r\n", i)
	if i%5 == 1 {
		fmt.Fprintf(&b, "In-Reply-To: <msg-%d@example.org>\r\nReferences: <msg-%d@example.org> <msg-%d@example.org>\r\n", i-1, i-2, i-1)
	}
	switch i % 4 {
	case 0:
		fmt.Fprintf(&b, "Subject: Report %d\r\n", i)
	case 1:
		fmt.Fprintf(&b, "Subject: =?UTF-8?B?%s?=\r\n", b64(fmt.Sprintf("Отчёт №%d", i)))
	case 2:
		fmt.Fprintf(&b, "Subject: =?KOI8-R?B?%s?=\r\n", "8tXT08vJyg==") // "Русский"
	default:
		fmt.Fprintf(&b, "Subject: Re: meeting %d\r\n", i)
	}
	b.WriteString("MIME-Version: 1.0\r\n")
	body := strings.Repeat(fmt.Sprintf("Line %d of message %d, some text to fill it up.\r\n", i, i), max(1, size/50))
	switch i % 3 {
	case 0:
		b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n")
		b.WriteString(body)
	case 1:
		b.WriteString("Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n")
		b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n")
		b.WriteString(body)
		b.WriteString("\r\n--b1\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\nContent-Disposition: attachment; filename=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
		b.WriteString("JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K\r\n")
		b.WriteString("--b1--\r\n")
	default:
		b.WriteString("Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>")
		b.WriteString(body)
		b.WriteString("</p></body></html>\r\n")
	}
	return []byte(b.String())
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// flagsFor gives message i some flags, so that the sync has something to
// copy.
func flagsFor(i int) []imap.Flag {
	switch i % 7 {
	case 0:
		return []imap.Flag{imap.FlagSeen}
	case 1:
		return []imap.Flag{imap.FlagSeen, imap.FlagFlagged}
	case 2:
		return []imap.Flag{imap.FlagAnswered}
	}
	return nil
}

// statsDelta is after minus before.
func statsDelta(before, after Stats) Stats {
	return Stats{
		BodyFetches: after.BodyFetches - before.BodyFetches, Bytes: after.Bytes - before.Bytes,
		RowWrites: after.RowWrites - before.RowWrites, Messages: after.Messages - before.Messages,
		Quarantined: after.Quarantined - before.Quarantined, Errors: after.Errors - before.Errors,
		Dials: after.Dials - before.Dials, Passes: after.Passes - before.Passes,
	}
}

// APIFixture is a synced mailbox for the API test of package
// imapsync_test (which may import api; this package may not).
type APIFixture struct {
	Engine    *Engine
	Mailboxes *mailbox.Service
	MailboxID int64
	Peer      *imapclient.Client
}

// NewAPIFixture syncs a Dovecot INBOX of msgs into a fresh SQLite
// database, owned by the portal user 1.
func NewAPIFixture(t *testing.T, db *store.DB, msgs [][]byte) *APIFixture {
	t.Helper()
	ca := testpeer.NewCA(t)
	dv := testpeer.StartDovecot(t, &testpeer.DovecotOptions{CA: ca})
	dv.AddUser(t, annLogin, annPass)
	for _, m := range msgs {
		dv.Deliver(t, annLogin, "INBOX", m)
	}
	v := newTestEnv(t, db, ca, Config{})
	if err := db.Gorm.Exec("INSERT INTO users (id, email, name, admin, created_at) VALUES (?, ?, '', ?, ?)",
		2, "other@example.com", false, time.Now().UTC()).Error; err != nil {
		t.Fatal(err)
	}
	mb := v.connect(t, dv, annLogin, annPass)
	if _, err := v.eng.SyncOnce(context.Background(), mb.ID); err != nil {
		t.Fatal(err)
	}
	return &APIFixture{Engine: v.eng, Mailboxes: v.mbs, MailboxID: mb.ID, Peer: dv.Client(t, annLogin, annPass)}
}

// GenMessage is genMessage for the external tests.
func GenMessage(i, size int) []byte { return genMessage(i, size) }
