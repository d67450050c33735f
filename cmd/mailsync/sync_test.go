package main

// End-to-end tests of the IMAP sync engine (package imapsync) inside
// "mailsync serve": a kill -9 during the initial sync, and three instances
// sharing 30 mailboxes on one PostgreSQL. They skip until serve runs the
// engine (serve --help lists MAILSYNC_POLL_INTERVAL).

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/sync"
)

const syncPass = "Sync-Pa55word"

// apiClient calls the HTTP API of a child with a token.
type apiClient struct {
	url, token string
	client     *http.Client
}

func (a *apiClient) call(t *testing.T, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, a.url+path, rd)
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var v map[string]any
	_ = json.Unmarshal(raw, &v)
	if v == nil {
		v = map[string]any{"raw": string(raw)}
	}
	return resp.StatusCode, v
}

// connectMailbox connects login's mailbox at localhost:port and returns its id.
func (a *apiClient) connectMailbox(t *testing.T, login string, port int) int64 {
	t.Helper()
	code, body := a.call(t, "POST", "/api/v1/mailboxes", map[string]any{
		"email": login, "password": syncPass,
		"imap": map[string]any{"host": "localhost", "port": port, "security": "ssl", "login": login},
	})
	if code != http.StatusCreated {
		t.Fatalf("connect %s = %d %v", login, code, body)
	}
	return int64(body["mailbox"].(map[string]any)["id"].(float64))
}

// inbox returns INBOX's total and synced counts from the folders route.
func (a *apiClient) inbox(t *testing.T, id int64) (total, synced int) {
	t.Helper()
	code, body := a.call(t, "GET", fmt.Sprintf("/api/v1/mailboxes/%d/folders", id), nil)
	if code != 200 {
		t.Fatalf("folders of %d = %d %v", id, code, body)
	}
	for _, f := range body["folders"].([]any) {
		if ff := f.(map[string]any); ff["name"] == "INBOX" {
			return int(ff["total"].(float64)), int(ff["synced"].(float64))
		}
	}
	t.Fatalf("no INBOX in %v", body)
	return 0, 0
}

// syncVars are the settings of a serve child that syncs against dv.
func syncVars(t *testing.T, d store.Dialect, ca *testpeer.CA) (map[string]string, string) {
	vars := map[string]string{
		"MAILSYNC_DATA_DIR":          t.TempDir(),
		"MAILSYNC_LOG_LEVEL":         "warn",
		"MAILSYNC_ALLOW_HOSTS":       "127.0.0.0/8",
		"MAILSYNC_EXTRA_CA_FILE":     ca.WriteFile(t),
		"MAILSYNC_SYNC_LEASE":        "2s",
		"MAILSYNC_POLL_INTERVAL":     "1h",
		"MAILSYNC_SUBMISSION_LISTEN": "off",
	}
	dsn := "sqlite://" + vars["MAILSYNC_DATA_DIR"] + "/mailsync.db"
	if d == store.Postgres {
		dsn = storetest.DSN(t, store.Postgres)
		key, err := secret.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		vars["MAILSYNC_DB"], vars["MAILSYNC_SECRET_KEY"] = dsn, key
	}
	return vars, dsn
}

// boundedPoll calls cond every 100 ms until it holds or timeout passes:
// the child's state is only visible through its API and database.
func boundedPoll(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("no %s within %v", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start)
}

// TestSyncCrashSafety kills serve with SIGKILL in the middle of an initial
// sync and starts it again: the folder converges to the server's, with no
// duplicate and no gap.
func TestSyncCrashSafety(t *testing.T) {
	bin := binary(t)
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		t.Run(string(d), func(t *testing.T) { syncCrashSafety(t, bin, d) })
	}
}

func syncCrashSafety(t *testing.T, bin string, d store.Dialect) {
	ca := testpeer.NewCA(t)
	dv := testpeer.StartDovecot(t, &testpeer.DovecotOptions{CA: ca})
	const login, n = "crash@example.test", 4000
	dv.AddUser(t, login, syncPass)
	for i := range n {
		dv.Deliver(t, login, "INBOX", syncMessage(i, 10000+(i%17)*3000))
	}
	vars, dsn := syncVars(t, d, ca)
	vars["MAILSYNC_SYNC_BATCH"] = "100"
	first := startChild(t, bin, vars)
	token := first.stdout.waitFor(t, tokenRE, first.done, first.stderr)[1]
	api := &apiClient{url: first.url, token: token, client: &http.Client{Timeout: 30 * time.Second}}
	id := api.connectMailbox(t, login, dv.TLSPort())

	boundedPoll(t, 60*time.Second, "partial initial sync", func() bool {
		_, synced := api.inbox(t, id)
		return synced >= 300
	})
	first.kill(t)
	db := openCrashDB(t, dsn)
	var killedAt int64
	db.Gorm.Raw("SELECT COUNT(*) FROM messages").Scan(&killedAt)
	db.Close()
	if killedAt >= n {
		t.Fatalf("the sync had finished (%d rows) before the kill; make it slower", killedAt)
	}

	second := startChild(t, bin, vars)
	api.url = second.url
	took := boundedPoll(t, 90*time.Second, "complete sync after the restart", func() bool {
		total, synced := api.inbox(t, id)
		return total == n && synced == n
	})
	t.Logf("%s: killed with %d of %d rows stored; converged %v after the restart", d, killedAt, n, took.Round(time.Millisecond))
	second.kill(t)

	db = openCrashDB(t, dsn)
	defer db.Close()
	var dup int64
	db.Gorm.Raw("SELECT COUNT(*) FROM (SELECT uid FROM messages GROUP BY folder_id, uid HAVING COUNT(*) > 1) d").Scan(&dup)
	if dup != 0 {
		t.Errorf("%d UIDs stored twice", dup)
	}
	c := dv.Client(t, login, syncPass)
	compareWithServer(t, db, c, id)
}

// compareWithServer checks the stored INBOX of mailbox id against the
// server: the same UIDs, flags and bytes.
func compareWithServer(t *testing.T, db *store.DB, c *imapclient.Client, id int64) {
	t.Helper()
	type msg struct {
		flags string
		sum   [32]byte
	}
	server := map[uint32]msg{}
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	cmd := c.Fetch(imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true,
		BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
	for m := cmd.Next(); m != nil; m = cmd.Next() {
		var uid uint32
		var x msg
		for item := m.Next(); item != nil; item = m.Next() {
			switch it := item.(type) {
			case imapclient.FetchItemDataUID:
				uid = uint32(it.UID)
			case imapclient.FetchItemDataFlags:
				var fs []string
				for _, f := range it.Flags {
					if f != `\Recent` {
						fs = append(fs, string(f))
					}
				}
				x.flags = sortedJoin(fs)
			case imapclient.FetchItemDataBodySection:
				h := sha256.New()
				_, _ = io.Copy(h, it.Literal)
				copy(x.sum[:], h.Sum(nil))
			}
		}
		server[uid] = x
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Gorm.Raw(`SELECT m.uid, m.flags, m.raw_codec, m.raw FROM messages m JOIN mailbox_folders f ON f.id = m.folder_id
		WHERE m.mailbox_id = ? AND f.name = 'INBOX'`, id).Rows()
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	stored := 0
	for rows.Next() {
		var (
			uid   uint32
			flags string
			codec string
			raw   []byte
		)
		if err := rows.Scan(&uid, &flags, &codec, &raw); err != nil {
			t.Fatal(err)
		}
		stored++
		sum := sha256.Sum256(decodeRaw(t, uid, codec, raw))
		s, ok := server[uid]
		if !ok || s.sum != sum || s.flags != flags {
			t.Errorf("uid %d: stored flags %q, on the server %v (present %v, bytes equal %v)", uid, flags, s.flags, ok, s.sum == sum)
		}
	}
	if stored != len(server) {
		t.Errorf("%d rows stored, %d messages on the server", stored, len(server))
	}
}

// decodeRaw decodes a stored messages.raw by its raw_codec.
func decodeRaw(t *testing.T, uid uint32, codec string, raw []byte) []byte {
	t.Helper()
	b, err := imapsync.DecodeRaw(codec, raw)
	if err != nil {
		t.Fatalf("uid %d: raw (%s): %v", uid, codec, err)
	}
	return b
}

func sortedJoin(s []string) string {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return strings.Join(s, " ")
}

func syncMessage(i, size int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: sender%d@example.org\r\nTo: crash@example.test\r\nSubject: message %d\r\n", i%11, i)
	fmt.Fprintf(&b, "Message-ID: <sync-%d@example.org>\r\nDate: %s\r\nContent-Type: text/plain\r\n\r\n",
		i, time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i)*time.Minute).Format(time.RFC1123Z))
	line := fmt.Sprintf("message %d: the quick brown fox jumps over the lazy dog\r\n", i)
	for b.Len() < size {
		b.WriteString(line)
	}
	return []byte(b.String())
}

// proxyCount forwards to a target and counts the connections open at once.
type proxyCount struct {
	ln                      net.Listener
	mu                      sync.Mutex
	open, maxOpen, accepted int
}

func startProxyCount(t *testing.T, target string) *proxyCount {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxyCount{ln: ln}
	var conns sync.Map
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			conns.Store(c, true)
			conns.Store(up, true)
			p.mu.Lock()
			p.open++
			p.accepted++
			p.maxOpen = max(p.maxOpen, p.open)
			p.mu.Unlock()
			wg.Go(func() {
				var inner sync.WaitGroup
				inner.Go(func() { _, _ = io.Copy(up, c); up.Close() })
				inner.Go(func() { _, _ = io.Copy(c, up); c.Close() })
				inner.Wait()
				p.mu.Lock()
				p.open--
				p.mu.Unlock()
			})
		}
	})
	return p
}

func (p *proxyCount) stats() (maxOpen, accepted int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxOpen, p.accepted
}

var userTokenRE = regexp.MustCompile(`(?m)^(mst_\S+)$`)

// TestThreeServeInstancesShareMailboxes runs three serve processes on one
// PostgreSQL database with 30 mailboxes: each mailbox is synced by one
// connection at a time as the IMAP server's side sees it (a counting proxy
// per mailbox), and when one process is killed its mailboxes are taken over
// within the lease TTL.
func TestThreeServeInstancesShareMailboxes(t *testing.T) {
	bin := binary(t)
	ca := testpeer.NewCA(t)
	dv := testpeer.StartDovecot(t, &testpeer.DovecotOptions{CA: ca})
	vars, dsn := syncVars(t, store.Postgres, ca)
	vars["MAILSYNC_MAX_MAILBOXES_PER_INSTANCE"] = "15"
	const mailboxes, perBox, ttl = 30, 10, 2 * time.Second

	var children []*child
	for range 3 {
		children = append(children, startChild(t, bin, vars))
	}
	// Three users of ten mailboxes each (connects are rate-limited per user).
	var tokens []string
	for u := range 3 {
		var out bytes.Buffer
		cmd := exec.Command(bin, "user", "add", "--email", fmt.Sprintf("user%d@example.com", u), "--name", "U")
		cmd.Env = envList(vars)
		cmd.Stdout = &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("user add: %v %s", err, out.String())
		}
		m := userTokenRE.FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("no token in %q", out.String())
		}
		tokens = append(tokens, m[1])
	}
	proxies := map[int64]*proxyCount{}
	loginOf := map[int64]string{}
	ownerOf := map[int64]int{}
	apis := make([]*apiClient, 3)
	for i := range mailboxes {
		login := fmt.Sprintf("box%02d@example.test", i)
		dv.AddUser(t, login, syncPass)
		for j := range perBox {
			dv.Deliver(t, login, "INBOX", syncMessage(i*100+j, 800))
		}
		p := startProxyCount(t, dv.TLSAddr())
		u := i % 3
		if apis[u] == nil {
			apis[u] = &apiClient{url: children[u].url, token: tokens[u], client: &http.Client{Timeout: 30 * time.Second}}
		}
		id := apis[u].connectMailbox(t, login, p.ln.Addr().(*net.TCPAddr).Port)
		proxies[id], loginOf[id], ownerOf[id] = p, login, u
	}
	db := openCrashDB(t, dsn)
	defer db.Close()
	allSynced := func() bool {
		var n int64
		db.Gorm.Raw("SELECT COUNT(*) FROM messages").Scan(&n)
		return n == mailboxes*perBox
	}
	boundedPoll(t, 60*time.Second, "all 30 mailboxes synced", allSynced)

	// Who holds what: the lease owner names the process id.
	holders := func() map[int64]string {
		var rows []struct {
			MailboxID int64
			Owner     string
		}
		db.Gorm.Raw("SELECT mailbox_id, owner FROM sync_leases WHERE owner <> '' AND expires_at > ?", time.Now().UTC()).Scan(&rows)
		out := map[int64]string{}
		for _, r := range rows {
			out[r.MailboxID] = r.Owner
		}
		return out
	}
	boundedPoll(t, 30*time.Second, "every mailbox leased", func() bool { return len(holders()) == mailboxes })
	victim := children[0]
	pidTag := fmt.Sprintf("-%d-", victim.cmd.Process.Pid)
	var victims []int64
	perOwner := map[string]int{}
	for id, o := range holders() {
		perOwner[o]++
		if strings.Contains(o, pidTag) {
			victims = append(victims, id)
		}
	}
	t.Logf("leases per instance: %v", perOwner)
	for o, n := range perOwner {
		if n > 15 {
			t.Errorf("instance %s holds %d mailboxes, over MAILSYNC_MAX_MAILBOXES_PER_INSTANCE=15", o, n)
		}
	}
	acceptedBefore := map[int64]int{}
	for _, id := range victims {
		_, acceptedBefore[id] = proxies[id].stats()
	}
	victim.kill(t)
	killed := time.Now()
	took := boundedPoll(t, 4*ttl+10*time.Second, "takeover of the killed instance's mailboxes", func() bool {
		for _, id := range victims {
			if _, a := proxies[id].stats(); a <= acceptedBefore[id] {
				return false
			}
		}
		return true
	})
	t.Logf("%d mailboxes of the killed instance taken over %v after the kill (lease %v)", len(victims), time.Since(killed).Round(time.Millisecond), ttl)
	if took > ttl+ttl/3+3*time.Second {
		t.Errorf("takeover took %v, want about the lease TTL (%v)", took, ttl)
	}
	for id, p := range proxies {
		if m, _ := p.stats(); m > 1 {
			t.Errorf("mailbox %d had %d connections open at once, want at most 1", id, m)
		}
	}
	// New mail still arrives after the takeover.
	for _, id := range victims[:min(3, len(victims))] {
		dv.Deliver(t, loginOf[id], "INBOX", syncMessage(9999, 500))
		api := apis[ownerOf[id]]
		api.url = children[1].url
		if code, body := api.call(t, "POST", fmt.Sprintf("/api/v1/mailboxes/%d/sync", id), nil); code != http.StatusAccepted {
			t.Errorf("POST sync = %d %v", code, body)
		}
	}
	boundedPoll(t, 30*time.Second, "the new messages after the takeover", func() bool {
		var n int64
		db.Gorm.Raw("SELECT COUNT(*) FROM messages").Scan(&n)
		return n == mailboxes*perBox+int64(min(3, len(victims)))
	})
}

func envList(vars map[string]string) []string {
	var out []string
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	return out
}
