package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/glebarez/sqlite"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
)

// Dialect names the database behind a DB.
type Dialect string

// The two dialects mailsync runs on.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DB is an open database.
type DB struct {
	Gorm    *gorm.DB
	Dialect Dialect
	sql     *sql.DB
	ckpt    *checkpointer // SQLite's WAL checkpoints; nil on PostgreSQL
	pins    *allocPins    // SQLite's C allocator kept from churning (sqlitealloc.go)
}

// Options tune Open. The zero value is fine.
type Options struct {
	Logger *slog.Logger
	// SlowQuery is the duration above which a query is logged at warn level
	// (default 1 s).
	SlowQuery time.Duration
	// MaxOpenConns caps the pool (default 16 on PostgreSQL, 8 on SQLite).
	MaxOpenConns int
}

// Open connects to the database named by dsn: sqlite://PATH (relative or
// absolute; its folder is created) or postgres://… / postgresql://….
func Open(ctx context.Context, dsn string, opts Options) (*DB, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	slow := opts.SlowQuery
	if slow == 0 {
		slow = time.Second
	}
	cfg := &gorm.Config{
		TranslateError:         true,
		Logger:                 newGormLogger(log, slow),
		NowFunc:                func() time.Time { return time.Now().UTC() },
		DisableAutomaticPing:   true,
		SkipDefaultTransaction: false,
	}
	var (
		dialector  gorm.Dialector
		dialect    Dialect
		maxConns   = opts.MaxOpenConns
		sqlitePath string
	)
	switch {
	case strings.HasPrefix(dsn, "sqlite://"):
		path := strings.TrimPrefix(dsn, "sqlite://")
		if path == "" || strings.Contains(path, "?") || path == ":memory:" {
			return nil, fmt.Errorf("MAILSYNC_DB %q: want sqlite://PATH to a database file", dsn)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("create database folder: %w", err)
		}
		dialect, dialector, sqlitePath = SQLite, sqlite.Open(sqliteDSN(path)), path
		if maxConns == 0 {
			maxConns = 8
		}
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		if _, err := url.Parse(dsn); err != nil {
			return nil, fmt.Errorf("MAILSYNC_DB: not a PostgreSQL URL: %w", redactURLError(err))
		}
		dialect, dialector = Postgres, postgres.Open(dsn)
		if maxConns == 0 {
			maxConns = 16
		}
	default:
		return nil, fmt.Errorf("MAILSYNC_DB %q: want sqlite://PATH or postgres://URL", RedactDSN(dsn))
	}
	g, err := gorm.Open(dialector, cfg)
	if err != nil {
		return nil, fmt.Errorf("open %s database: %w", dialect, err)
	}
	sqlDB, err := g.DB()
	if err != nil {
		return nil, fmt.Errorf("open %s database: %w", dialect, err)
	}
	sqlDB.SetMaxOpenConns(maxConns)
	sqlDB.SetMaxIdleConns(maxConns)
	sqlDB.SetConnMaxIdleTime(5 * time.Minute)
	db := &DB{Gorm: g, Dialect: dialect, sql: sqlDB}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.Ping(pingCtx); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("connect to %s database: %w", dialect, err)
	}
	if dialect == SQLite {
		db.ckpt = startCheckpointer(sqlDB, sqlitePath, log)
		db.pins = pinAllocator()
	}
	return db, nil
}

// sqliteBusyTimeout is how long a statement waits for a lock held by
// another connection.
const sqliteBusyTimeout = 10 * time.Second

// sqliteDSN adds the pragmas every connection needs. _txlock=immediate makes
// each transaction take the write lock when it begins, so two read-then-write
// transactions never deadlock into "database is locked".
//
// page_size applies only to a database being created (it comes before
// journal_mode, which writes the first page); an existing database keeps
// its own. 16 KiB pages cut the cost of large values — synced messages'
// raw bytes go through the WAL and the checkpoint page by page — by about
// 40 % against SQLite's default 4 KiB, for about 25 % more on small
// transactions; larger pages cost small transactions much more (see
// docs/benchmarks.md, "IMAP sync").
func sqliteDSN(path string) string {
	q := url.Values{}
	q.Add("_pragma", "page_size(16384)")
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	// Checkpoints run in the background (checkpoint.go); a commit runs one
	// only past this many WAL pages.
	q.Add("_pragma", fmt.Sprintf("wal_autocheckpoint(%d)", walAutoCheckpointPages))
	q.Add("_pragma", fmt.Sprintf("journal_size_limit(%d)", walRestartBytes)) // the WAL file shrinks back when rewound
	// Statement journals and sorts in memory, not in temporary files
	// opened and removed for every multi-row statement.
	q.Add("_pragma", "temp_store(MEMORY)")
	// No cache spill: a transaction larger than the page cache (2 MiB; a
	// sync commit is up to 8 MiB of bodies) otherwise writes pages to the
	// WAL before it commits, and each such page goes into the statement
	// journal first, all of it memory that modernc's allocator maps and
	// unmaps for each use. With spill off the cache holds a transaction's
	// pages until it commits and shrinks back after: 20 % less CPU for an
	// initial sync (docs/benchmarks.md, "IMAP sync").
	q.Add("_pragma", "cache_spill(0)")
	q.Set("_txlock", "immediate")
	return path + "?" + q.Encode()
}

// WithContext returns a gorm session bound to ctx: the way every query starts.
func (db *DB) WithContext(ctx context.Context) *gorm.DB { return db.Gorm.WithContext(ctx) }

// Prepare prepares query on the pool: each connection prepares it once,
// when a transaction first runs it there (sql.Tx.StmtContext). For hot
// paths on SQLite, whose driver otherwise parses every statement anew;
// gorm's PrepareStmt mode does not help inside transactions (it prepares
// on the transaction, so database/sql prepares again in the next one).
func (db *DB) Prepare(ctx context.Context, query string) (*sql.Stmt, error) {
	return db.sql.PrepareContext(ctx, query)
}

// Ping checks the database answers.
func (db *DB) Ping(ctx context.Context) error { return db.sql.PingContext(ctx) }

// Close stops the SQLite checkpointer and closes the pool.
func (db *DB) Close() error {
	if db.ckpt != nil {
		db.ckpt.stop()
	}
	err := db.sql.Close()
	db.pins.release()
	return err
}

// Ready reports whether the database answers and carries every migration.
func (db *DB) Ready(ctx context.Context) error {
	if err := db.Ping(ctx); err != nil {
		return fmt.Errorf("database unreachable: %w", err)
	}
	var have []int
	if err := db.WithContext(ctx).Raw("SELECT version FROM schema_migrations").Scan(&have).Error; err != nil {
		return fmt.Errorf("read schema_migrations: %w", err)
	}
	for _, v := range Versions() {
		if !slices.Contains(have, v) {
			return fmt.Errorf("database lacks migration %d", v)
		}
	}
	return nil
}

// IsNotFound reports whether err is gorm's record-not-found.
func IsNotFound(err error) bool { return errors.Is(err, gorm.ErrRecordNotFound) }

// IsDuplicate reports whether err is a unique-constraint violation.
func IsDuplicate(err error) bool { return errors.Is(err, gorm.ErrDuplicatedKey) }

// RedactDSN shows a DSN without its password.
func RedactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		if i := strings.Index(dsn, "://"); i >= 0 {
			return dsn[:i+3] + "…"
		}
		return "…"
	}
	if u.User != nil {
		u.User = url.User(u.User.Username())
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "redacted")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// redactURLError drops the URL from a url.Error, which would show a password.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
