package outgoing

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailsync/mailsync/internal/ratelimit"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/ttlcache"
)

// Checker runs the step-by-step SMTP check; *Network is one.
type Checker interface {
	Check(ctx context.Context, req CheckRequest) Report
}

// Clock tells the time; tests use a fake one to move through retries
// without sleeping.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now().UTC() }

// Caller is who asks: the outgoing package knows users only by id and role.
type Caller struct {
	UserID int64
	Admin  bool
	Lang   string
}

// Config tunes the outgoing services. Zero values mean the defaults.
type Config struct {
	CheckTimeout      time.Duration // whole SMTP check (15 s)
	MaxMessageBytes   int64         // largest accepted message (25 MiB)
	MaxQueueAge       time.Duration // retries stop after this (3 days)
	LeaseTTL          time.Duration // a claim's lease (2 min)
	SendTimeout       time.Duration // one message on an open connection, DATA included (5 min)
	MaxConnsPerRoute  int           // concurrent SMTP connections per account (2)
	ConnMaxReuse      time.Duration // how long one SMTP connection is reused (5 min)
	MaxUnknownRetries int           // resends after a lost reply to the final dot (1)
	BatchSize         int           // messages claimed per round (50)
	PollInterval      time.Duration // how often workers look for due messages when not woken (2 s)
	// ConfirmationAccount is the email of the system account that mails
	// sender confirmation codes and relays mail from confirmed addresses.
	ConfirmationAccount string
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.CheckTimeout, 15*time.Second)
	def(&c.MaxQueueAge, 72*time.Hour)
	def(&c.LeaseTTL, 2*time.Minute)
	def(&c.SendTimeout, 5*time.Minute)
	def(&c.ConnMaxReuse, 5*time.Minute)
	def(&c.PollInterval, 2*time.Second)
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 25 << 20
	}
	if c.MaxConnsPerRoute <= 0 {
		c.MaxConnsPerRoute = 2
	}
	if c.MaxUnknownRetries < 0 {
		c.MaxUnknownRetries = 0
	} else if c.MaxUnknownRetries == 0 {
		c.MaxUnknownRetries = 1
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 50
	}
	return c
}

// Service is the outgoing side of mailsync: accounts, outbox and send log.
type Service struct {
	db      *store.DB
	box     *secret.Box
	checker Checker
	net     *Network
	clock   Clock
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	routers []Router
	wake    chan struct{}
	limiter *ratelimit.Limiter
	inserts *groupCommit
	sqlite  *sqliteWrites                    // the hot paths' statements on SQLite (sqlitewrite.go); nil elsewhere
	routes  *ttlcache.Cache[string, Account] // From address → active system account
	// handoff is the running worker's queue for messages accepted here
	// (handoff.go); nil while no worker of this Service runs.
	handoff atomic.Pointer[handoff]
	scratch sync.Pool // *[]byte: S2's output buffers (body.go)
}

// Deps are what a Service needs.
type Deps struct {
	DB      *store.DB
	Box     *secret.Box
	Network *Network // dials SMTP servers for sending
	Checker Checker  // nil = Network
	Clock   Clock    // nil = the system clock
	Logger  *slog.Logger
	Metrics *Metrics // nil = unregistered metrics
	// Limiter counts user-triggered checks; nil = a new one on the clock.
	Limiter *ratelimit.Limiter
}

// NewService builds the service.
func NewService(d Deps, cfg Config) *Service {
	s := &Service{
		db: d.DB, box: d.Box, net: d.Network, checker: d.Checker, clock: d.Clock,
		cfg: cfg.withDefaults(), log: d.Logger, metrics: d.Metrics,
		wake: make(chan struct{}, 1), inserts: &groupCommit{db: d.DB},
		routes: ttlcache.New[string, Account](routeCacheTTL, routeCacheMax),
	}
	if s.checker == nil {
		s.checker = d.Network
	}
	if s.clock == nil {
		s.clock = systemClock{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	if s.db.Dialect == store.SQLite {
		sw, err := newSQLiteWrites(context.Background(), s.db)
		if err != nil { // the multi-row statements still work
			s.log.Error("outbox: prepared single-row writes unavailable", "error", err)
		}
		s.sqlite, s.inserts.sqlite = sw, sw
	}
	if s.db.Dialect == store.Postgres {
		pg, err := newPGInserts(s.db.Gorm)
		if err != nil { // the transaction of two statements still works
			s.log.Error("outbox: single-statement group inserts unavailable", "error", err)
		}
		s.inserts.pg = pg
	}
	s.routers = []Router{systemRouter{s}, smtpRouter{s}, addressRouter{s}}
	s.limiter = d.Limiter
	if s.limiter == nil {
		s.limiter = ratelimit.New(s.clock.Now)
	}
	return s
}

// AddRouter lets another sender kind (mailboxes, CRM senders) take part in
// routing by From. Routers are asked in order; the first that claims the
// address wins.
func (s *Service) AddRouter(r Router) { s.routers = append(s.routers, r) }

// Config returns the effective configuration.
func (s *Service) Config() Config { return s.cfg }

func (s *Service) now() time.Time { return s.clock.Now().UTC() }

// wakeWorkers nudges the workers to look for due messages now.
func (s *Service) wakeWorkers() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
