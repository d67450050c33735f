package imapsync

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gorm.io/gorm"

	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/mailbox"
)

// Defaults of Config.
const (
	DefaultPollInterval     = 5 * time.Minute
	DefaultLeaseTTL         = 30 * time.Second
	DefaultCommandTimeout   = 60 * time.Second
	DefaultBatchSize        = 200
	DefaultMaxMessageBytes  = 64 << 20
	DefaultIdleRestart      = 25 * time.Minute
	DefaultBackoffMin       = time.Second
	DefaultBackoffMax       = 5 * time.Minute
	DefaultMaxParseFailures = 3
)

// Config tunes the engine; the zero value of a field means its default.
type Config struct {
	// PollInterval is how often folders other than INBOX (and INBOX when
	// the server has no IDLE) are synced. Negative: never (IDLE and sync
	// requests only).
	PollInterval time.Duration
	// MaxMailboxesPerInstance caps the mailboxes this instance holds; 0 is
	// no cap. Instances on one database otherwise split the mailboxes
	// evenly.
	MaxMailboxesPerInstance int
	// LeaseTTL is how long a mailbox stays with an instance that stopped
	// renewing its lease (renewed every LeaseTTL/3).
	LeaseTTL time.Duration
	// CommandTimeout closes a connection whose command made no progress
	// for this long (a half-open or stalled server).
	CommandTimeout time.Duration
	// BatchSize is the number of messages per UID FETCH of bodies, and so
	// the most a restart refetches.
	BatchSize int
	// MaxMessageBytes is the largest message whose raw bytes are stored;
	// a larger one is stored without them (raw_omitted).
	MaxMessageBytes int64
	// IdleRestart ends IDLE and starts it again after this long (RFC 2177
	// servers may cut an IDLE after 30 minutes).
	IdleRestart time.Duration
	// BackoffMin and BackoffMax bound the reconnect delay, which doubles
	// with each failure (with jitter).
	BackoffMin, BackoffMax time.Duration
	// MaxParseFailures is how many times a message may fail to parse
	// before it is quarantined.
	MaxParseFailures int
	// NoCondStore ignores CONDSTORE even when the server offers it (for
	// tests of the flag sweep and for servers with a broken CONDSTORE).
	NoCondStore bool
	// InstanceID names this instance in the lease table; default: host
	// name, process id and a random suffix.
	InstanceID string
}

func (c *Config) setDefaults() {
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.CommandTimeout <= 0 {
		c.CommandTimeout = DefaultCommandTimeout
	}
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.IdleRestart <= 0 {
		c.IdleRestart = DefaultIdleRestart
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	if c.MaxParseFailures <= 0 {
		c.MaxParseFailures = DefaultMaxParseFailures
	}
	if c.InstanceID == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.InstanceID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
}

// Deps are what the engine needs.
type Deps struct {
	DB        *store.DB
	Mailboxes *mailbox.Service
	Logger    *slog.Logger
	// Metrics registers the engine's metrics; nil: not registered.
	Metrics prometheus.Registerer
	// Now is the clock; nil means time.Now in UTC.
	Now func() time.Time
}

// Engine syncs the selected folders of the mailboxes it holds a lease on.
// Run is its worker loop; the other methods are safe to call at any time,
// from any goroutine.
type Engine struct {
	db      *store.DB
	mbs     *mailbox.Service
	log     *slog.Logger
	cfg     Config
	now     func() time.Time
	metrics *metrics
	count   counters

	wake chan struct{} // the lease loop: a mailbox changed or a sync was asked for

	mu      sync.Mutex
	workers map[int64]*worker
	once    map[int64]bool // mailboxes in SyncOnce
	running bool
	abandon bool // tests: stop as if killed, leaving leases and the instance row behind

	hooks hooks
}

// hooks let tests observe the engine without sleeping.
type hooks struct {
	committed func(mailboxID int64, folder string, uids []uint32) // after each batch commit
	passDone  func(mailboxID int64, err error)                    // after each pass of a worker
	dialed    func(mailboxID int64)                               // after each successful login
	fetched   func(mailboxID int64, uid uint32)                   // after each body read, inside the FETCH loop
	state     func(mailboxID int64, state string)                 // after each status write
	timedOut  func(mailboxID int64)                               // when a command deadline closes a connection
}

// counters back Stats.
type counters struct {
	bodies, bytes, rowWrites, messages, quarantined, errors, dials, passes atomic.Int64
}

// Stats are the engine's counts since it was built.
type Stats struct {
	BodyFetches int64 // message bodies fetched
	Bytes       int64 // raw bytes fetched
	RowWrites   int64 // message rows inserted, updated or deleted
	Messages    int64 // message rows inserted
	Quarantined int64
	Errors      int64 // failed passes
	Dials       int64 // successful logins
	Passes      int64 // completed passes
}

// Stats returns the counts so far.
func (e *Engine) Stats() Stats {
	c := &e.count
	return Stats{
		BodyFetches: c.bodies.Load(), Bytes: c.bytes.Load(), RowWrites: c.rowWrites.Load(),
		Messages: c.messages.Load(), Quarantined: c.quarantined.Load(), Errors: c.errors.Load(),
		Dials: c.dials.Load(), Passes: c.passes.Load(),
	}
}

// New builds an engine, registers its metrics, and hooks it to the mailbox
// service: a deleted mailbox's messages go in the same transaction
// (OnDelete), and a change to a mailbox wakes the engine (OnChange).
func New(d Deps, cfg Config) *Engine {
	cfg.setDefaults()
	e := &Engine{
		db: d.DB, mbs: d.Mailboxes, log: d.Logger, cfg: cfg, now: d.Now,
		metrics: newMetrics(d.Metrics),
		wake:    make(chan struct{}, 1),
		workers: map[int64]*worker{},
		once:    map[int64]bool{},
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.log = e.log.With("component", "sync")
	if e.now == nil {
		e.now = func() time.Time { return time.Now().UTC() }
	}
	if d.Mailboxes != nil {
		d.Mailboxes.OnDelete(deleteMailboxRows)
		d.Mailboxes.OnChange = e.changed
	}
	return e
}

// Name names the worker.
func (e *Engine) Name() string { return "imap-sync" }

// Config returns the configuration in force, defaults filled in.
func (e *Engine) Config() Config { return e.cfg }

// deleteMailboxRows removes a mailbox's synced messages, lease and
// quarantine entries inside the transaction deleting the mailbox.
func deleteMailboxRows(tx *gorm.DB, mailboxID int64) error {
	for _, m := range []any{&messageRow{}, &quarantineRow{}, &leaseRow{}} {
		if err := tx.Where("mailbox_id = ?", mailboxID).Delete(m).Error; err != nil {
			return fmt.Errorf("delete synced data of mailbox %d: %w", mailboxID, err)
		}
	}
	return nil
}

// changed is the mailbox service's OnChange: settings, folders or the
// mailbox itself changed. The holder's worker rereads them; the lease loop
// runs at once (to pick up a new or revived mailbox).
func (e *Engine) changed(mailboxID int64) {
	e.mu.Lock()
	w := e.workers[mailboxID]
	e.mu.Unlock()
	if w != nil {
		w.poke(true)
	}
	e.kick()
}

func (e *Engine) kick() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// SyncNow asks for a sync pass of every selected folder of the mailbox:
// at once when this instance holds it, else through the lease row, which
// the holder reads within LeaseTTL/3. It does not wait for the pass.
func (e *Engine) SyncNow(ctx context.Context, mailboxID int64) error {
	e.mu.Lock()
	w := e.workers[mailboxID]
	e.mu.Unlock()
	if w != nil {
		w.poke(false)
		return nil
	}
	now := e.now()
	err := e.db.WithContext(ctx).Exec(`INSERT INTO sync_leases (mailbox_id, owner, expires_at, acquired_at, sync_requested)
		VALUES (?, '', ?, ?, ?) ON CONFLICT (mailbox_id) DO UPDATE SET sync_requested = ?`,
		mailboxID, time.Unix(0, 0).UTC(), now, true, true).Error
	if err != nil {
		return fmt.Errorf("request a sync of mailbox %d: %w", mailboxID, err)
	}
	e.kick()
	return nil
}

// SyncOnce runs one pass over the mailbox's selected folders on a
// connection of its own and returns what each folder sync did. It takes
// the mailbox's lease for the pass and gives it back after, so it fails
// with ErrLeaseHeld while an engine holds the mailbox. For tools (the
// benchmark) and tests; the engine's workers do the same work.
func (e *Engine) SyncOnce(ctx context.Context, mailboxID int64) ([]FolderResult, error) {
	e.mu.Lock()
	busy := e.workers[mailboxID] != nil || e.once[mailboxID]
	e.mu.Unlock()
	if busy {
		return nil, ErrLeaseHeld
	}
	ok, err := e.acquire(ctx, mailboxID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrLeaseHeld
	}
	e.mu.Lock()
	e.once[mailboxID] = true
	e.mu.Unlock()
	defer func() {
		e.release(context.WithoutCancel(ctx), mailboxID)
		e.mu.Lock()
		delete(e.once, mailboxID)
		e.mu.Unlock()
	}()
	mb, err := e.mbs.ByID(ctx, mailboxID)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := e.dial(cctx, mb)
	if err != nil {
		return nil, err
	}
	defer s.close()
	e.count.dials.Add(1)
	return e.pass(ctx, s, mb, "")
}

// pass syncs the selected folders of mb (only: that folder alone), INBOX
// last, so that the connection ends on INBOX ready for IDLE. A folder the
// server refuses to open is skipped and reported; any other error ends the
// pass.
func (e *Engine) pass(ctx context.Context, s *session, mb mailbox.Mailbox, only string) ([]FolderResult, error) {
	var folders []mailbox.FolderRow
	q := e.db.WithContext(ctx).Where("mailbox_id = ? AND selected = ? AND no_select = ?", mb.ID, true, false)
	if only != "" {
		q = q.Where("name = ?", only)
	}
	if err := q.Order("id").Find(&folders).Error; err != nil {
		return nil, fmt.Errorf("read folders of mailbox %d: %w", mb.ID, err)
	}
	// INBOX last.
	for i, f := range folders {
		if isInbox(f.Name) && i != len(folders)-1 {
			folders = append(append(folders[:i:i], folders[i+1:]...), f)
			break
		}
	}
	var (
		results  []FolderResult
		firstErr error
	)
	for _, f := range folders {
		if isInbox(f.Name) {
			s.drainHints() // a change from now on arrives as a new hint
		}
		start := time.Now()
		res, err := e.syncFolder(ctx, s, mb, f)
		e.metrics.folderSeconds.Observe(time.Since(start).Seconds())
		results = append(results, res)
		if err != nil {
			var se *stepError
			step := stepFetch
			if errors.As(err, &se) {
				step = se.Step
			}
			e.metrics.errors.WithLabelValues(step).Inc()
			if folderOnly(err) {
				e.log.Warn("folder skipped", "mailbox_id", mb.ID, "folder", f.Name, "error", err)
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			return results, err
		}
		e.log.Debug("folder synced", "mailbox_id", mb.ID, "folder", f.Name, "new", res.New, "updated", res.Updated,
			"deleted", res.Deleted, "bodies", res.Bodies, "unchanged", res.Unchanged)
	}
	return results, firstErr
}
