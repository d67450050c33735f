package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
)

const (
	crashMessages = 1000 // messages queued before the kill
	crashHoldFrom = 250  // the peer holds the reply to this and every later DATA until after the kill
	crashClients  = 8    // concurrent API clients queueing
	crashSender   = "site@example.com"
	crashPassword = "Crash-Pa55word"
)

// TestCrashSafety runs "mailsync serve" as a child process, queues 1,000
// messages, kills it with SIGKILL while it is sending and starts it again on
// the same database: every Message-ID reaches the peer at least once, none is
// lost, no more are sent twice than were in flight at the kill, and every row
// ends sent.
//
// The kill lands mid-stream without timing: the peer accepts the first
// crashHoldFrom-1 messages at once, then reads the next ones whole but holds
// its reply to the final dot until the test releases it, after the kill. So
// at the kill some messages are delivered and recorded, at least one is at
// the peer without its 250 having reached mailsync (the case that may be
// sent twice), and the rest of its batch is leased to the dead process (the
// case that must be taken over once the lease runs out).
func TestCrashSafety(t *testing.T) {
	bin := binary(t)
	for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
		t.Run(string(d), func(t *testing.T) { crashSafety(t, bin, d) })
	}
}

func crashSafety(t *testing.T, bin string, d store.Dialect) {
	vars := map[string]string{
		"MAILSYNC_DATA_DIR":  t.TempDir(),
		"MAILSYNC_LOG_LEVEL": "warn",
		// A dead holder's lease runs out fast.
		"MAILSYNC_OUTBOX_LEASE": "2s",
		"MAILSYNC_ALLOW_HOSTS":  "127.0.0.0/8",
	}
	dsn := "sqlite://" + filepath.Join(vars["MAILSYNC_DATA_DIR"], "mailsync.db")
	if d == store.Postgres {
		dsn = storetest.DSN(t, store.Postgres) // skips without a server
		key, err := secret.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		// Only the embedded set-up generates its key.
		vars["MAILSYNC_DB"], vars["MAILSYNC_SECRET_KEY"] = dsn, key
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	ca := testpeer.NewCA(t)
	vars["MAILSYNC_EXTRA_CA_FILE"] = ca.WriteFile(t)
	release := make(chan struct{})
	held := make(chan struct{})
	var releaseOnce, heldOnce sync.Once
	peer := testpeer.StartSMTP(t, &testpeer.SMTPOptions{
		Mode: testpeer.SMTPStartTLS, TLS: ca.ServerTLS(t),
		Users: map[string]string{crashSender: crashPassword},
		Script: &testpeer.SMTPScript{Data: func(n int, _ []byte) error {
			if n < crashHoldFrom {
				return nil
			}
			select {
			case <-release:
				return nil
			default:
			}
			heldOnce.Do(func() { close(held) })
			<-release
			return nil // recorded as delivered, whether or not the client is still there
		}},
	})
	// Registered after StartSMTP, so it runs before the peer's Close waits
	// for its connections.
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })

	first := startChild(t, bin, vars)
	token := first.stdout.waitFor(t, tokenRE, first.done, first.stderr)[1]
	api := &crashAPI{url: first.url, token: token, client: &http.Client{Timeout: 30 * time.Second}}
	code, body := api.post(ctx, "/api/v1/smtp-accounts", map[string]any{
		"email": crashSender, "host": "localhost", "port": peer.Port(), "security": "starttls",
		"auth": "login", "login": crashSender, "password": crashPassword,
	})
	if code != http.StatusCreated {
		t.Fatalf("POST /api/v1/smtp-accounts = %d %s, want 201", code, body)
	}

	ids := api.queue(t, ctx, crashMessages)
	if len(ids) != crashMessages {
		t.Fatalf("queued %d distinct Message-IDs, want %d", len(ids), crashMessages)
	}

	// Mid-stream: the first messages are delivered and one is held at the
	// peer, reply pending.
	if _, err := peer.WaitMessages(ctx, crashHoldFrom-1); err != nil {
		t.Fatalf("before the kill: %v; stderr:\n%s", err, first.stderr)
	}
	select {
	case <-held:
	case <-ctx.Done():
		t.Fatalf("no message reached the held DATA reply; stderr:\n%s", first.stderr)
	case <-first.done:
		t.Fatalf("serve exited early; stderr:\n%s", first.stderr)
	}
	first.kill(t)

	db := openCrashDB(t, dsn)
	atKill := statusCounts(t, db)
	var sending []string
	if err := db.Gorm.Raw("SELECT message_id FROM outbox WHERE status = ?", "sending").Scan(&sending).Error; err != nil {
		t.Fatal(err)
	}
	db.Close()
	inFlight := len(sending)
	if inFlight == 0 || atKill["sent"] >= crashMessages {
		t.Fatalf("at the kill the outbox was %v; want some sent and some sending", atKill)
	}
	// The held messages were read whole: the peer delivers them although
	// their sender is gone, as a real server would.
	releaseOnce.Do(func() { close(release) })

	// Every message in flight at the kill is sent again by the restarted
	// process, once the dead one's lease ran out; those deliveries come on
	// connections accepted after connBase.
	connBase := peer.Conns()
	second := startChild(t, bin, vars)
	if tokenRE.MatchString(second.stdout.String()) {
		t.Errorf("the restart printed a new admin token")
	}
	want := len(ids)
	for {
		msgs, err := peer.WaitMessages(ctx, want)
		if err != nil {
			t.Fatalf("after the restart: %v; stderr:\n%s", err, second.stderr)
		}
		seen := crashUnique(t, msgs, ids)
		resent := map[string]bool{}
		for _, m := range msgs {
			if m.ConnID > connBase {
				resent[crashMessageID(t, m)] = true
			}
		}
		owed := 0 // messages that need another arrival, each its own
		for id := range ids {
			if !seen[id] {
				owed++
			}
		}
		for _, id := range sending {
			if seen[id] && !resent[id] {
				owed++
			}
		}
		if owed == 0 {
			break
		}
		want = len(msgs) + owed
	}
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-second.done:
	case <-ctx.Done():
		t.Fatalf("serve did not stop after SIGTERM; stderr:\n%s", second.stderr)
	}
	if c := second.cmd.ProcessState.ExitCode(); c != 0 {
		t.Errorf("serve exited %d after SIGTERM; stderr:\n%s", c, second.stderr)
	}

	msgs := peer.Messages()
	unique := crashUnique(t, msgs, ids)
	dups := len(msgs) - len(unique)
	if len(unique) != len(ids) {
		t.Errorf("the peer has %d of the %d Message-IDs", len(unique), len(ids))
	}
	if dups > inFlight {
		t.Errorf("%d messages arrived twice, more than the %d in flight at the kill", dups, inFlight)
	}
	for _, m := range msgs {
		if !m.TLS || m.AuthUser != crashSender {
			t.Errorf("a message arrived with TLS %v as %q, want TLS as %s", m.TLS, m.AuthUser, crashSender)
			break
		}
	}

	db = openCrashDB(t, dsn)
	defer db.Close()
	final := statusCounts(t, db)
	if final["sent"] != crashMessages || len(final) != 1 {
		t.Errorf("after the restart the outbox is %v, want all %d sent", final, crashMessages)
	}
	var rows []struct {
		MessageID string
		Status    string
	}
	if err := db.Gorm.Raw("SELECT message_id, status FROM outbox").Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if !ids[r.MessageID] {
			t.Errorf("outbox row %s (%s) was not queued by the test", r.MessageID, r.Status)
		}
	}
	t.Logf("%s: killed with %v; %d deliveries for %d messages (%d twice)", d, atKill, len(msgs), len(unique), dups)
}

// crashUnique returns the set of Message-IDs among msgs, failing the test for
// one without a Message-ID or one the test did not queue.
func crashUnique(t *testing.T, msgs []testpeer.SMTPMessage, queued map[string]bool) map[string]bool {
	t.Helper()
	seen := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		id := crashMessageID(t, m)
		if !queued[id] {
			t.Fatalf("the peer got Message-ID %q, which the test did not queue", id)
		}
		seen[id] = true
	}
	return seen
}

func crashMessageID(t *testing.T, m testpeer.SMTPMessage) string {
	t.Helper()
	pm, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatalf("the peer got an unreadable message: %v", err)
	}
	return strings.Trim(pm.Header.Get("Message-Id"), "<>")
}

func openCrashDB(t *testing.T, dsn string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), dsn, store.Options{MaxOpenConns: 1})
	if err != nil {
		t.Fatalf("open the database: %v", err)
	}
	return db
}

func statusCounts(t *testing.T, db *store.DB) map[string]int {
	t.Helper()
	var rows []struct {
		Status string
		N      int
	}
	if err := db.Gorm.Raw("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status").Scan(&rows).Error; err != nil {
		t.Fatalf("count the outbox: %v", err)
	}
	out := map[string]int{}
	for _, r := range rows {
		out[r.Status] = r.N
	}
	return out
}

// child is "mailsync serve" running as a child process.
type child struct {
	cmd    *exec.Cmd
	url    string
	stdout *output
	stderr *output
	done   chan struct{} // closed once the process was reaped
}

func startChild(t *testing.T, bin string, vars map[string]string) *child {
	t.Helper()
	c := &child{stdout: newOutput(), stderr: newOutput(), done: make(chan struct{})}
	c.cmd = exec.Command(bin, "serve", "-listen", "127.0.0.1:0", "-submission-listen", "off")
	c.cmd.Env = os.Environ()
	for k, v := range vars {
		c.cmd.Env = append(c.cmd.Env, k+"="+v)
	}
	c.cmd.Stdout, c.cmd.Stderr = c.stdout, c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { c.kill(t) })
	c.url = c.stdout.waitFor(t, listenRE, c.done, c.stderr)[1]
	return c
}

// kill ends the process with SIGKILL, at once, and waits for it.
func (c *child) kill(t *testing.T) {
	t.Helper()
	select {
	case <-c.done:
		return
	default:
	}
	if err := c.cmd.Process.Kill(); err != nil {
		t.Errorf("kill serve: %v", err)
	}
	<-c.done
}

type crashAPI struct {
	url    string
	token  string
	client *http.Client
}

func (a *crashAPI) post(ctx context.Context, path string, body any) (int, []byte) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, []byte(err.Error())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.url+path, bytes.NewReader(b))
	if err != nil {
		return 0, []byte(err.Error())
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// queue submits n messages from crashClients concurrent clients and returns
// the set of Message-IDs the API answered with.
func (a *crashAPI) queue(t *testing.T, ctx context.Context, n int) map[string]bool {
	t.Helper()
	var (
		mu   sync.Mutex
		ids  = make(map[string]bool, n)
		errs []string
		wg   sync.WaitGroup
	)
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	for range crashClients {
		wg.Go(func() {
			for i := range next {
				code, body := a.post(ctx, "/api/v1/outbox", map[string]any{
					"from": crashSender, "to": []string{"rcpt@example.org"},
					"subject": fmt.Sprintf("crash test %d", i), "text": fmt.Sprintf("message %d of %d\n", i, n),
				})
				var out struct {
					MessageID string `json:"message_id"`
				}
				_ = json.Unmarshal(body, &out)
				mu.Lock()
				if code != http.StatusAccepted || out.MessageID == "" {
					errs = append(errs, fmt.Sprintf("message %d: %d %s", i, code, body))
				} else {
					ids[out.MessageID] = true
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("POST /api/v1/outbox failed %d times, first: %s", len(errs), errs[0])
	}
	return ids
}
