package imapsync

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/mailbox"
)

// watcher records what the engine's hooks report and lets a test wait for
// a condition on it without sleeping.
type watcher struct {
	mu        sync.Mutex
	changed   chan struct{}
	passes    map[int64]int // successful passes by mailbox
	passErrs  []error
	committed map[uint32]time.Time // INBOX uid → when its row was committed
	fetched   int
	dials     map[int64]int
	states    map[int64]string
	onFetch   func(n int) // called (outside the lock) with the count of bodies read
}

func newWatcher() *watcher {
	return &watcher{changed: make(chan struct{}), passes: map[int64]int{}, committed: map[uint32]time.Time{}, dials: map[int64]int{}, states: map[int64]string{}}
}

func (w *watcher) note(f func()) {
	w.mu.Lock()
	f()
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// attach sets the engine's hooks; call before Run.
func (w *watcher) attach(e *Engine) {
	e.hooks.passDone = func(id int64, err error) {
		w.note(func() {
			if err == nil {
				w.passes[id]++
			} else {
				w.passErrs = append(w.passErrs, err)
			}
		})
	}
	e.hooks.committed = func(_ int64, folder string, uids []uint32) {
		now := time.Now()
		w.note(func() {
			if folder == "INBOX" {
				for _, u := range uids {
					w.committed[u] = now
				}
			}
		})
	}
	e.hooks.dialed = func(id int64) { w.note(func() { w.dials[id]++ }) }
	e.hooks.state = func(id int64, state string) { w.note(func() { w.states[id] = state }) }
	e.hooks.fetched = func(int64, uint32) {
		var n int
		w.note(func() { w.fetched++; n = w.fetched })
		if w.onFetch != nil {
			w.onFetch(n)
		}
	}
}

// wait blocks until cond (run under the lock) holds, failing after timeout.
func (w *watcher) wait(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		ok := cond()
		ch := w.changed
		w.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			w.mu.Lock()
			errs := slices.Clone(w.passErrs)
			w.mu.Unlock()
			t.Fatalf("no %s within %v (pass errors: %v)", what, timeout, errs)
		}
	}
}

// runEngine runs e until the test ends.
func runEngine(t testing.TB, e *Engine) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run() = %v, want context.Canceled", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestIdleLatency appends 50 messages one by one from another IMAP client
// while the engine waits in IDLE, polling off: each reaches the database
// within 2 s (p99).
func TestIdleLatency(t *testing.T) {
	t.Parallel()
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ca := testpeer.NewCA(t)
		dv := testpeer.StartDovecot(t, &testpeer.DovecotOptions{CA: ca})
		dv.AddUser(t, annLogin, annPass)
		for i := range 20 {
			dv.Deliver(t, annLogin, "INBOX", genMessage(i, 500))
		}
		v := newTestEnv(t, db, ca, Config{PollInterval: -1, LeaseTTL: 3 * time.Second})
		mb := v.connect(t, dv, annLogin, annPass)
		w := newWatcher()
		w.attach(v.eng)
		runEngine(t, v.eng)
		w.wait(t, 20*time.Second, "initial pass", func() bool { return w.passes[mb.ID] > 0 })

		peer := dv.Client(t, annLogin, annPass)
		var lat []time.Duration
		for i := range 50 {
			msg := genMessage(1000+i, 800)
			start := time.Now()
			cmd := peer.Append("INBOX", int64(len(msg)), nil)
			if _, err := cmd.Write(msg); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Close(); err != nil {
				t.Fatal(err)
			}
			data, err := cmd.Wait()
			if err != nil {
				t.Fatal(err)
			}
			uid := uint32(data.UID)
			if uid == 0 {
				t.Fatal("APPEND returned no UID (UIDPLUS)")
			}
			var at time.Time
			w.wait(t, 10*time.Second, fmt.Sprintf("row for appended uid %d", uid), func() bool {
				at = w.committed[uid]
				return !at.IsZero()
			})
			lat = append(lat, at.Sub(start))
		}
		slices.Sort(lat)
		p50, p99 := lat[len(lat)/2], lat[(len(lat)*99+99)/100-1]
		t.Logf("IDLE: append to row, p50 %v, p99 %v, max %v", p50, p99, lat[len(lat)-1])
		if p99 > 2*time.Second {
			t.Errorf("p99 append-to-row latency %v, want ≤ 2 s", p99)
		}
		v.assertConverged(t, peer, mb.ID, "INBOX")
		st, err := v.eng.Status(context.Background(), mb.ID)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != StateIdle || !st.LastSyncOK || st.LastSyncAt == nil || st.Synced != 70 {
			t.Errorf("Status() = %+v; want idle, last sync ok, 70 synced", st)
		}
	})
}

// TestReconnectAfterKick cuts the connection mid-FETCH of the initial
// sync (Dovecot's imap process killed): the worker reconnects, resumes
// and converges, without duplicates or gaps.
func TestReconnectAfterKick(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ca := testpeer.NewCA(t)
		dv := testpeer.StartDovecot(t, &testpeer.DovecotOptions{CA: ca})
		dv.AddUser(t, annLogin, annPass)
		const n = 1000
		for i := range n {
			dv.Deliver(t, annLogin, "INBOX", genMessage(i, 600), flagsFor(i)...)
		}
		v := newTestEnv(t, db, ca, Config{PollInterval: -1, BatchSize: 200})
		mb := v.connect(t, dv, annLogin, annPass)
		w := newWatcher()
		kickNow, kicked := make(chan struct{}), make(chan struct{})
		w.onFetch = func(count int) {
			if count == 300 { // in the second batch: the test goroutine kicks while this one waits
				close(kickNow)
				<-kicked
			}
		}
		w.attach(v.eng)
		runEngine(t, v.eng)
		select {
		case <-kickNow:
		case <-time.After(30 * time.Second):
			t.Fatal("the sync did not reach the 300th message")
		}
		k := dv.Kick(t, annLogin)
		close(kicked)
		if k != 1 {
			t.Errorf("Kick cut %d connections, want 1", k)
		}
		w.wait(t, 60*time.Second, "a complete pass after the kick", func() bool { return w.passes[mb.ID] > 0 })
		if d := w.dials[mb.ID]; d < 2 {
			t.Errorf("%d logins; want a reconnect after the kick", d)
		}
		peer := dv.Client(t, annLogin, annPass)
		v.assertConverged(t, peer, mb.ID, "INBOX")
		if got := v.eng.Stats().BodyFetches; got > n+300 {
			t.Errorf("%d bodies fetched for %d messages: more than the batch cut short was refetched", got, n)
		}
	})
}

// freezer is a TCP proxy that can stop forwarding on the connections it
// has, as a peer that vanishes without closing (half-open); connections
// made later are forwarded.
type freezer struct {
	done   chan struct{}
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen []chan struct{}
	conns  []net.Conn
}

func startFreezer(t testing.TB, target string) *freezer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target, done: make(chan struct{})}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(f.done)
		ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
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
			stop := make(chan struct{})
			f.mu.Lock()
			f.frozen = append(f.frozen, stop)
			f.conns = append(f.conns, c, up)
			f.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if n > 0 {
						select {
						case <-stop:
							<-f.done // frozen: hold the bytes, answer nothing, close nothing
							return
						default:
						}
						if _, werr := dst.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						dst.Close()
						return
					}
				}
			}
			go pipe(up, c)
			go pipe(c, up)
		}
	})
	return f
}

func (f *freezer) port() int { return f.ln.Addr().(*net.TCPAddr).Port }

// freeze stops every connection made so far.
func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.frozen {
		select {
		case <-s:
		default:
			close(s)
		}
	}
}

// TestHalfOpenConnection freezes the connection mid-FETCH (the peer stops
// answering but does not close): the command deadline detects it, the
// worker reconnects and converges.
func TestHalfOpenConnection(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, store.SQLite)
	ca := testpeer.NewCA(t)
	dv := testpeer.StartDovecot(t, &testpeer.DovecotOptions{CA: ca})
	dv.AddUser(t, annLogin, annPass)
	const n = 1000
	for i := range n {
		dv.Deliver(t, annLogin, "INBOX", genMessage(i, 600))
	}
	proxy := startFreezer(t, dv.TLSAddr())
	const deadline = time.Second
	v := newTestEnv(t, db, ca, Config{PollInterval: -1, BatchSize: 200, CommandTimeout: deadline})
	mb := v.connectAt(t, "localhost", proxy.port(), annLogin, annPass)
	w := newWatcher()
	var frozenAt time.Time
	w.onFetch = func(count int) {
		if count == 300 {
			proxy.freeze()
			w.note(func() { frozenAt = time.Now() })
		}
	}
	w.attach(v.eng)
	var firedAt time.Time
	v.eng.hooks.timedOut = func(int64) {
		w.note(func() {
			if firedAt.IsZero() {
				firedAt = time.Now()
			}
		})
	}
	var timeoutErr bool
	passDone := v.eng.hooks.passDone
	v.eng.hooks.passDone = func(id int64, err error) {
		if errors.Is(err, ErrCommandTimeout) {
			w.note(func() { timeoutErr = true })
		}
		passDone(id, err)
	}
	runEngine(t, v.eng)
	w.wait(t, 60*time.Second, "a complete pass after the freeze", func() bool { return w.passes[mb.ID] > 0 })
	w.mu.Lock()
	detected, reported := firedAt.Sub(frozenAt), timeoutErr
	w.mu.Unlock()
	if firedAt.IsZero() || !reported {
		t.Fatalf("the freeze was not detected by the command deadline (fired %v, pass error %v)", !firedAt.IsZero(), reported)
	}
	t.Logf("half-open connection detected %v after the freeze (command deadline %v)", detected.Round(time.Millisecond), deadline)
	// The deadline counts from the last progress: the bytes already in
	// flight at the freeze are read first (+2 s of slack for them).
	if detected > deadline+2*time.Second {
		t.Errorf("detected %v after the freeze, want within the %v deadline (+2 s)", detected, deadline)
	}
	peer := dv.Client(t, annLogin, annPass)
	v.assertConverged(t, peer, mb.ID, "INBOX")
}

// TestAuthFailure: a password changed on the server marks the mailbox
// auth_failed and stops the retries; new settings bring it back.
func TestAuthFailure(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, store.SQLite)
	ca := testpeer.NewCA(t)
	dv := testpeer.StartDovecot(t, &testpeer.DovecotOptions{CA: ca})
	dv.AddUser(t, annLogin, annPass)
	dv.Deliver(t, annLogin, "INBOX", genMessage(1, 300))
	v := newTestEnv(t, db, ca, Config{PollInterval: -1, LeaseTTL: 2 * time.Second})
	mb := v.connect(t, dv, annLogin, annPass)
	w := newWatcher()
	w.attach(v.eng)
	runEngine(t, v.eng)
	w.wait(t, 20*time.Second, "initial pass", func() bool { return w.passes[mb.ID] > 0 })

	const newPass = "Changed-Pa55"
	dv.SetPassword(t, annLogin, newPass)
	dv.Kick(t, annLogin)
	ctx := context.Background()
	w.wait(t, 20*time.Second, "auth_failed after the password change", func() bool { return w.states[mb.ID] == StateAuthFailed })
	got, err := v.mbs.ByID(ctx, mb.ID)
	if err != nil || !got.AuthFailed {
		t.Fatalf("ByID() = %+v, %v; want auth_failed", got, err)
	}
	if got.SyncState != StateAuthFailed || got.LastSyncOK || got.LastError == "" {
		t.Errorf("mailbox after a refused login: state %q, ok %v, error %q; want auth_failed with the error", got.SyncState, got.LastSyncOK, got.LastError)
	}
	// No more attempts: several lease rounds pass without a login.
	w.mu.Lock()
	dials := w.dials[mb.ID]
	w.mu.Unlock()
	for range 3 {
		v.eng.tick(ctx)
	}
	if st, _ := v.mbs.ByID(ctx, mb.ID); !st.AuthFailed {
		t.Errorf("auth_failed was cleared without a settings change")
	}

	pw := secret.Secret(newPass)
	if _, _, err := v.mbs.Update(ctx, owner, mb.ID, mailbox.UpdateInput{Password: &pw}); err != nil {
		t.Fatalf("Update() = %v", err)
	}
	dv.Deliver(t, annLogin, "INBOX", genMessage(2, 300))
	w.wait(t, 20*time.Second, "a pass with the new password", func() bool { return w.dials[mb.ID] > dials && w.passes[mb.ID] > 1 })
	peer := dv.Client(t, annLogin, newPass)
	v.assertConverged(t, peer, mb.ID, "INBOX")
}

// TestQuarantine: a message whose header cannot be parsed is retried, then
// quarantined after MaxParseFailures and left alone; the rest syncs.
func TestQuarantine(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, store.SQLite)
	ca := testpeer.NewCA(t)
	dv := testpeer.StartDovecot(t, &testpeer.DovecotOptions{CA: ca})
	dv.AddUser(t, annLogin, annPass)
	dv.Deliver(t, annLogin, "INBOX", genMessage(1, 300))
	dv.Deliver(t, annLogin, "INBOX", []byte("this line is no header\r\nSubject: broken\r\n\r\nbody\r\n"))
	dv.Deliver(t, annLogin, "INBOX", genMessage(3, 300))
	v := newTestEnv(t, db, ca, Config{MaxParseFailures: 3})
	mb := v.connect(t, dv, annLogin, annPass)
	ctx := context.Background()
	for attempt := 1; attempt <= 3; attempt++ {
		res, err := v.eng.SyncOnce(ctx, mb.ID)
		if err != nil {
			t.Fatal(err)
		}
		inbox := res[len(res)-1]
		wantFailed, wantQ := 1, 0
		if attempt == 3 {
			wantFailed, wantQ = 0, 1
		}
		if inbox.Failed != wantFailed || inbox.Quarantined != wantQ {
			t.Errorf("attempt %d: %+v; want %d failed, %d quarantined", attempt, inbox, wantFailed, wantQ)
		}
	}
	before := v.eng.Stats()
	res, err := v.eng.SyncOnce(ctx, mb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := statsDelta(before, v.eng.Stats()); d.BodyFetches != 0 || d.RowWrites != 0 || !res[len(res)-1].Unchanged {
		t.Errorf("after quarantine: %d bodies, %d writes, %+v; want none, unchanged", d.BodyFetches, d.RowWrites, res[len(res)-1])
	}
	st, err := v.eng.Status(ctx, mb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Quarantined != 1 || st.Synced != 2 || st.Total != 3 {
		t.Errorf("Status() = %+v; want 1 quarantined, 2 of 3 synced", st)
	}
	var q quarantineRow
	if err := db.Gorm.Take(&q).Error; err != nil || q.UID != 2 || q.Attempts != 3 || !q.Quarantined || q.LastError == "" {
		t.Errorf("quarantine row = %+v, %v; want uid 2, 3 attempts, quarantined, with the error", q, err)
	}
}

// TestFlagSweepWithoutCondstore runs the incremental sync without
// CONDSTORE: flags are compared by a sweep, and an unchanged folder still
// costs no body and no write.
func TestFlagSweepWithoutCondstore(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ca := testpeer.NewCA(t)
		dv := testpeer.StartDovecot(t, &testpeer.DovecotOptions{CA: ca})
		dv.AddUser(t, annLogin, annPass)
		for i := range 700 {
			dv.Deliver(t, annLogin, "INBOX", genMessage(i, 300), flagsFor(i)...)
		}
		v := newTestEnv(t, db, ca, Config{NoCondStore: true, BatchSize: 300})
		mb := v.connect(t, dv, annLogin, annPass)
		ctx := context.Background()
		if _, err := v.eng.SyncOnce(ctx, mb.ID); err != nil {
			t.Fatal(err)
		}
		before := v.eng.Stats()
		if _, err := v.eng.SyncOnce(ctx, mb.ID); err != nil {
			t.Fatal(err)
		}
		if d := statsDelta(before, v.eng.Stats()); d.BodyFetches != 0 || d.RowWrites != 0 {
			t.Errorf("unchanged resync without CONDSTORE: %d bodies, %d writes; want 0", d.BodyFetches, d.RowWrites)
		}
		peer := dv.Client(t, annLogin, annPass)
		if _, err := peer.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		if err := peer.Store(imap.UIDSetNum(5, 650), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{"$Label1"}, Silent: true}, nil).Close(); err != nil {
			t.Fatal(err)
		}
		before = v.eng.Stats()
		res, err := v.eng.SyncOnce(ctx, mb.ID)
		if err != nil {
			t.Fatal(err)
		}
		if d := statsDelta(before, v.eng.Stats()); d.RowWrites != 2 || d.BodyFetches != 0 || res[len(res)-1].Updated != 2 {
			t.Errorf("flag sweep: %d writes, %d bodies, %+v; want 2 updates and no body", d.RowWrites, d.BodyFetches, res[len(res)-1])
		}
		v.assertConverged(t, peer, mb.ID, "INBOX")
	})
}

// TestDeleteMailboxRemovesMessages: disconnecting a mailbox removes its
// synced messages in the same transaction.
func TestDeleteMailboxRemovesMessages(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, store.SQLite)
	ca := testpeer.NewCA(t)
	dv := testpeer.StartDovecot(t, &testpeer.DovecotOptions{CA: ca})
	dv.AddUser(t, annLogin, annPass)
	for i := range 5 {
		dv.Deliver(t, annLogin, "INBOX", genMessage(i, 300))
	}
	v := newTestEnv(t, db, ca, Config{})
	mb := v.connect(t, dv, annLogin, annPass)
	ctx := context.Background()
	if _, err := v.eng.SyncOnce(ctx, mb.ID); err != nil {
		t.Fatal(err)
	}
	if err := v.mbs.Delete(ctx, owner, mb.ID); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"messages", "sync_leases", "sync_quarantine"} {
		var n int64
		if err := db.Gorm.Table(table).Count(&n).Error; err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%d rows left in %s after the mailbox was deleted", n, table)
		}
	}
}

// TestEngineDiesMidSync stops an engine as if killed (no lease released)
// in the middle of an initial sync; another engine on the same database
// takes the mailbox over once the lease runs out and converges, with no
// duplicate and no gap. (cmd/mailsync's TestSyncCrashSafety does the same
// with kill -9 of serve.)
func TestEngineDiesMidSync(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, store.SQLite)
	ca := testpeer.NewCA(t)
	dv := testpeer.StartDovecot(t, &testpeer.DovecotOptions{CA: ca})
	dv.AddUser(t, annLogin, annPass)
	const n = 1000
	for i := range n {
		dv.Deliver(t, annLogin, "INBOX", genMessage(i, 700), flagsFor(i)...)
	}
	const ttl = 3 * time.Second
	a := newTestEnv(t, db, ca, Config{PollInterval: -1, BatchSize: 100, LeaseTTL: ttl, InstanceID: "a"})
	mb := a.connect(t, dv, annLogin, annPass)
	wa := newWatcher()
	reached, resume := make(chan struct{}), make(chan struct{})
	wa.onFetch = func(count int) {
		if count == 450 {
			close(reached)
			<-resume
		}
	}
	wa.attach(a.eng)
	ctx, kill := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.eng.Run(ctx) }()
	select {
	case <-reached:
	case <-time.After(30 * time.Second):
		t.Fatal("engine a did not reach the 450th message")
	}
	// The kill: the context ends while the worker is held mid-FETCH; its
	// connection is closed and nothing more is committed (the database
	// calls carry the same context); the lease stays.
	a.eng.abandon = true
	kill()
	close(resume)
	<-done
	killed := time.Now()
	var stored int64
	db.Gorm.Model(&messageRow{}).Count(&stored)
	if stored == 0 || stored >= n {
		t.Fatalf("%d rows stored at the kill; want a partial sync", stored)
	}

	b := newTestEnvWithBox(t, db, ca, a.box, Config{PollInterval: -1, BatchSize: 100, LeaseTTL: ttl, InstanceID: "b"})
	wb := newWatcher()
	wb.attach(b.eng)
	runEngine(t, b.eng)
	wb.wait(t, 30*time.Second, "a complete pass by engine b", func() bool { return wb.passes[mb.ID] > 0 })
	t.Logf("killed with %d of %d rows; engine b finished %v later (lease TTL %v)", stored, n, time.Since(killed).Round(time.Millisecond), ttl)
	peer := dv.Client(t, annLogin, annPass)
	b.assertConverged(t, peer, mb.ID, "INBOX")
	if got := b.eng.Stats().BodyFetches; got > n-stored+int64(b.eng.cfg.BatchSize) {
		t.Errorf("engine b fetched %d bodies; %d were missing", got, n-stored)
	}
}
