package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// SQLite's WAL checkpoints (copying committed pages from the WAL into the
// database file, then fsync) run in a goroutine of their own rather than
// in whichever COMMIT crosses wal_autocheckpoint: a bulk writer — the IMAP
// sync's initial import — then keeps inserting while the checkpoint's
// writes and fsyncs go on beside it, instead of waiting for them at every
// second commit (docs/benchmarks.md, "IMAP sync"). The automatic
// checkpoint stays as a backstop at a larger WAL (walAutoCheckpointPages),
// should this goroutine fall behind.
const (
	checkpointEvery        = 250 * time.Millisecond
	walAutoCheckpointPages = 8192 // 128 MiB of 16 KiB pages, 32 MiB of 4 KiB ones
	checkpointWarnEvery    = time.Minute
	// walRestartBytes: past this WAL size the checkpointer follows a
	// complete PASSIVE checkpoint with a RESTART one, which waits for the
	// writer of the moment and starts the WAL over. A PASSIVE one beside a busy writer rarely ends with every
	// frame copied at the moment a transaction begins, which is when SQLite
	// rewinds the WAL, and lookups in a WAL of the size of a whole initial
	// sync slow every statement down.
	walRestartBytes = 64 << 20
	restartWait     = time.Second
)

// checkpointer runs PRAGMA wal_checkpoint(PASSIVE) whenever the WAL file
// changed since the last one. PASSIVE never waits for readers or writers,
// so it cannot stall them; what it cannot copy yet it copies next time.
// Past walRestartBytes a complete one is followed by RESTART, which does
// wait, briefly.
type checkpointer struct {
	db     *sql.DB
	wal    string
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
	ran    chan struct{} // a checkpoint ran (capacity 1; for tests)
}

func startCheckpointer(db *sql.DB, path string, log *slog.Logger) *checkpointer {
	ctx, cancel := context.WithCancel(context.Background())
	c := &checkpointer{db: db, wal: path + "-wal", log: log, cancel: cancel,
		done: make(chan struct{}), ran: make(chan struct{}, 1)}
	go c.run(ctx)
	return c
}

func (c *checkpointer) run(ctx context.Context) {
	defer close(c.done)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	var (
		lastSize int64
		lastMod  time.Time
		warned   time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := os.Stat(c.wal)
		if err != nil || st.Size() == 0 || (st.Size() == lastSize && st.ModTime().Equal(lastMod)) {
			continue // no WAL, or nothing written since the last checkpoint
		}
		var busy, frames, copied int
		err = c.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied)
		if err == nil && busy == 0 && copied == frames && st.Size() > walRestartBytes {
			// Everything up to a moment ago is copied: the RESTART has only
			// what was committed since to copy while it holds writers off.
			busy, frames, copied, err = c.restart(ctx)
		}
		if err != nil {
			if ctx.Err() == nil && time.Since(warned) >= checkpointWarnEvery {
				c.log.Warn("SQLite WAL checkpoint failed; commits will checkpoint past the WAL limit", "error", err)
				warned = time.Now()
			}
			continue
		}
		if busy == 0 && copied == frames {
			// All copied. A checkpoint reads the WAL file and writes the
			// database file, so the WAL's size and time are still those of
			// what it copied; a partial one is tried again next time.
			lastSize, lastMod = st.Size(), st.ModTime()
		}
		select {
		case c.ran <- struct{}{}:
		default:
		}
	}
}

// restart runs a RESTART checkpoint on a connection whose busy timeout is
// restartWait: it holds writers off while it waits for readers, so it
// gives up (busy) rather than stall them for the pool's 10 s.
func (c *checkpointer) restart(ctx context.Context) (busy, frames, copied int, err error) {
	conn, err := c.db.Conn(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA busy_timeout = %d", restartWait.Milliseconds())); err != nil {
		return 0, 0, 0, err
	}
	err = conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint(RESTART)").Scan(&busy, &frames, &copied)
	if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), fmt.Sprintf("PRAGMA busy_timeout = %d", sqliteBusyTimeout.Milliseconds())); rerr != nil {
		// The connection would keep the short timeout: drop it.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		if err == nil {
			err = rerr
		}
	}
	return busy, frames, copied, err
}

// stop ends the goroutine and waits for it.
func (c *checkpointer) stop() {
	c.cancel()
	<-c.done
}
