package imapsync

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
)

// countingProxy forwards to target and records how many connections are
// open at once: the server's view of how many workers sync its mailbox.
type countingProxy struct {
	ln       net.Listener
	mu       sync.Mutex
	open     int
	maxOpen  int
	accepted int
}

func startCountingProxy(t testing.TB, target string) *countingProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{ln: ln}
	var wg sync.WaitGroup
	var conns sync.Map
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

func (p *countingProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *countingProxy) max() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxOpen
}

// TestThreeEnginesShareMailboxes runs three engines on one PostgreSQL
// database with 30 mailboxes: they split them evenly, each mailbox is
// synced by one connection at a time as the server sees it, and when one
// engine dies (no release) the others take its mailboxes over once its
// leases run out.
func TestThreeEnginesShareMailboxes(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, store.Postgres)
	ca := testpeer.NewCA(t)
	dv := testpeer.StartDovecot(t, &testpeer.DovecotOptions{CA: ca})
	const (
		mailboxes = 30
		perBox    = 10
		ttl       = 2 * time.Second
	)
	cfg := Config{PollInterval: -1, LeaseTTL: ttl}
	envs := make([]*testEnv, 3)
	watchers := make([]*watcher, 3)
	for i := range envs {
		c := cfg
		c.InstanceID = fmt.Sprintf("engine-%d", i)
		if i == 0 {
			envs[i] = newTestEnv(t, db, ca, c)
		} else {
			envs[i] = newTestEnvWithBox(t, db, ca, envs[0].box, c)
		}
		watchers[i] = newWatcher()
		watchers[i].attach(envs[i].eng)
	}
	proxies := map[int64]*countingProxy{}
	for i := range mailboxes {
		login := fmt.Sprintf("u%02d@example.test", i)
		dv.AddUser(t, login, annPass)
		for j := range perBox {
			dv.Deliver(t, login, "INBOX", genMessage(i*100+j, 300))
		}
		p := startCountingProxy(t, dv.TLSAddr())
		mb := envs[0].insertMailbox(t, "localhost", p.port(), login, annPass)
		proxies[mb.ID] = p
	}

	stops := make([]func(), 3)
	for i, v := range envs {
		stops[i] = runEngine(t, v.eng)
	}
	synced := func() int {
		n := 0
		for id := range proxies {
			for _, w := range watchers {
				w.mu.Lock()
				ok := w.passes[id] > 0
				w.mu.Unlock()
				if ok {
					n++
					break
				}
			}
		}
		return n
	}
	deadline := time.Now().Add(30 * time.Second)
	for synced() < mailboxes {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d mailboxes synced after 30 s", synced(), mailboxes)
		}
		waitAny(watchers, 200*time.Millisecond)
	}
	// An even split: bounded poll of the lease table (the engines'
	// hand-overs have no other signal).
	holders := func() map[string]int {
		var rows []struct {
			Owner string
			N     int
		}
		if err := db.Gorm.Raw(`SELECT owner, COUNT(*) AS n FROM sync_leases WHERE owner <> '' AND expires_at > ? GROUP BY owner`, time.Now().UTC()).
			Scan(&rows).Error; err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for _, r := range rows {
			out[r.Owner] = r.N
		}
		return out
	}
	even := func(h map[string]int, engines int, per int) bool {
		total := 0
		for _, n := range h {
			if n > per {
				return false
			}
			total += n
		}
		return len(h) == engines && total == mailboxes
	}
	var h map[string]int
	for deadline := time.Now().Add(15 * time.Second); ; {
		if h = holders(); even(h, 3, 10) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leases not split evenly after 15 s: %v", h)
		}
		time.Sleep(100 * time.Millisecond) // bounded poll of the database
	}
	t.Logf("leases: %v", h)

	// Kill engine 0: its connections drop, its leases stay until they run out.
	var victims []int64
	if err := db.Gorm.Raw(`SELECT mailbox_id FROM sync_leases WHERE owner = ?`, "engine-0").Scan(&victims).Error; err != nil {
		t.Fatal(err)
	}
	dialsBefore := map[int64]int{}
	for _, id := range victims {
		for _, w := range watchers[1:] {
			w.mu.Lock()
			dialsBefore[id] += w.dials[id]
			w.mu.Unlock()
		}
	}
	envs[0].eng.abandon = true
	killed := time.Now()
	stops[0]()
	takenOver := func() int {
		n := 0
		for _, id := range victims {
			d := 0
			for _, w := range watchers[1:] {
				w.mu.Lock()
				d += w.dials[id]
				w.mu.Unlock()
			}
			if d > dialsBefore[id] {
				n++
			}
		}
		return n
	}
	for takenOver() < len(victims) {
		if time.Since(killed) > 4*ttl+5*time.Second {
			t.Fatalf("%d of %d mailboxes of the dead engine taken over after %v", takenOver(), len(victims), time.Since(killed))
		}
		waitAny(watchers[1:], 100*time.Millisecond)
	}
	took := time.Since(killed)
	t.Logf("the dead engine's %d mailboxes were taken over %v after the kill (lease TTL %v)", len(victims), took.Round(time.Millisecond), ttl)
	if took > ttl+ttl/3+2*time.Second {
		t.Errorf("takeover took %v; want about the lease TTL %v", took, ttl)
	}
	for id, p := range proxies {
		if m := p.max(); m > 1 {
			t.Errorf("mailbox %d: %d connections at once, want at most 1", id, m)
		}
	}
	// Sync now, asked of an engine that does not hold the mailbox: the
	// holder runs a pass (nothing else would: polling is off, nothing new).
	var asked int64
	if err := db.Gorm.Raw(`SELECT mailbox_id FROM sync_leases WHERE owner = ? LIMIT 1`, "engine-1").Scan(&asked).Error; err != nil || asked == 0 {
		t.Fatalf("no mailbox held by engine-1: %v", err)
	}
	watchers[1].mu.Lock()
	before := watchers[1].passes[asked]
	watchers[1].mu.Unlock()
	if err := envs[2].eng.SyncNow(context.Background(), asked); err != nil {
		t.Fatal(err)
	}
	watchers[1].wait(t, 3*ttl, "a pass asked through another engine", func() bool { return watchers[1].passes[asked] > before })

	var rows int64
	if err := db.Gorm.Table("messages").Count(&rows).Error; err != nil {
		t.Fatal(err)
	}
	if rows != mailboxes*perBox {
		t.Errorf("%d message rows, want %d", rows, mailboxes*perBox)
	}
}

// waitAny waits until one of the watchers notes something, or d passes.
func waitAny(ws []*watcher, d time.Duration) {
	cases := make(chan struct{}, len(ws))
	stop := make(chan struct{})
	defer close(stop)
	for _, w := range ws {
		w.mu.Lock()
		ch := w.changed
		w.mu.Unlock()
		go func() {
			select {
			case <-ch:
				cases <- struct{}{}
			case <-stop:
			}
		}()
	}
	select {
	case <-cases:
	case <-time.After(d):
	}
}
