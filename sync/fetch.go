package imapsync

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailsync/mailsync/internal/store"
)

// Bounds of the fetch pipeline.
const (
	pipelineBytes = 24 << 20 // raw bodies read but not yet compressed
	maxWorkers    = 4        // goroutines parsing and compressing
)

// fetched is one message read from a FETCH: its row (raw compressed once
// a worker is done with it) or why it could not be read.
type fetched struct {
	row    messageRow
	body   []byte // the raw message as read, until compressed
	failed error  // unreadable: counted toward quarantine
	broken error  // the connection failed while the body was read
}

// budget bounds the bytes in flight between the reader and the workers.
type budget struct {
	mu    sync.Mutex
	cond  *sync.Cond
	avail int64
	max   int64
}

func newBudget(n int64) *budget {
	b := &budget{avail: n, max: n}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// take waits for n bytes; a message larger than the whole budget waits
// for all of it.
func (b *budget) take(n int64) {
	n = min(n, b.max)
	b.mu.Lock()
	for b.avail < n {
		b.cond.Wait()
	}
	b.avail -= n
	b.mu.Unlock()
}

func (b *budget) give(n int64) {
	n = min(n, b.max)
	b.mu.Lock()
	b.avail += n
	b.mu.Unlock()
	b.cond.Broadcast()
}

// fetchAll fetches the bodies of uids (newest first) and stores them. Three
// stages run at once, so that the connection never waits for the parser,
// the compressor or the database:
//
//   - this goroutine, which owns the connection, sends one UID FETCH per
//     BatchSize UIDs and reads each literal whole into memory (the sizes in
//     flight are bounded by pipelineBytes; a literal longer than
//     MaxMessageBytes is parsed as it streams and its bytes dropped);
//   - workers parse and gzip the bodies;
//   - a writer commits rows every BatchSize rows or commitBytes, each
//     commit with the folder's progress; the last commit, once every
//     FETCH has ended well, also advances the folder's state.
//
// A crash loses the rows not yet committed: at most a batch and what is in
// flight; the next run's diff fetches them again.
func (fs *folderSync) fetchAll(ctx context.Context, uids []uint32) error {
	e := fs.e
	bud := newBudget(pipelineBytes)
	toWork := make(chan *fetched, 64)
	toWrite := make(chan *fetched, 64)
	readDone := make(chan error, 1)
	writeDone := make(chan error, 1)

	workers := min(max(runtime.GOMAXPROCS(0), 1), maxWorkers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var gz *gzip.Writer
			for m := range toWork {
				if m.body != nil {
					n := int64(len(m.body))
					gz = fs.compress(m, gz)
					bud.give(n)
				}
				toWrite <- m
			}
		})
	}
	go func() {
		wg.Wait()
		close(toWrite)
	}()

	// Writers: PostgreSQL takes concurrent transactions, SQLite one
	// writer at a time.
	writers := 1
	if e.db.Dialect == store.Postgres {
		writers = 2
	}
	var storeFailed sync.Once
	storeErrCh := make(chan struct{})
	leftovers := make(chan []fetched, writers)
	writeErrs := make(chan error, writers)
	for range writers {
		go func() {
			var (
				pending []fetched
				size    int64
				err     error
			)
			for m := range toWrite {
				if err != nil {
					continue // drain
				}
				pending = append(pending, *m)
				size += int64(len(m.row.Raw))
				if len(pending) >= e.cfg.BatchSize || size >= commitBytes {
					err = fs.commit(ctx, pending, false)
					pending, size = nil, 0
					if err != nil {
						storeFailed.Do(func() { close(storeErrCh) })
					}
				}
			}
			leftovers <- pending
			writeErrs <- err
		}()
	}
	go func() {
		// The last commit, with the folder's state when every FETCH ended
		// well, comes after every other commit.
		var rest []fetched
		var err error
		for range writers {
			rest = append(rest, <-leftovers...)
			if werr := <-writeErrs; err == nil {
				err = werr
			}
		}
		if err == nil {
			final := <-readDone == nil
			err = fs.commit(ctx, rest, final)
		}
		writeDone <- err
	}()

	rerr := fs.readAll(uids, toWork, bud, storeErrCh)
	close(toWork)
	readDone <- rerr
	werr := <-writeDone
	if rerr != nil {
		return rerr
	}
	return werr
}

// errStoreFailed stops the reader when the writer has failed.
var errStoreFailed = errors.New("store failed")

// readAll sends the UID FETCHes and reads every message into toWork.
func (fs *folderSync) readAll(uids []uint32, toWork chan<- *fetched, bud *budget, storeErr <-chan struct{}) error {
	s, f := fs.s, fs.f
	opts := &imap.FetchOptions{
		UID: true, Flags: true, InternalDate: true, RFC822Size: true, ModSeq: s.condstore,
		BodySection: []*imap.FetchItemBodySection{{Peek: true}},
	}
	for start := 0; start < len(uids); start += fs.e.cfg.BatchSize {
		batch := uids[start:min(start+fs.e.cfg.BatchSize, len(uids))]
		cmd := s.c.Fetch(uidSet(batch), opts)
		w := s.watch()
		stopped := false
		for {
			msg := cmd.Next()
			if msg == nil {
				break
			}
			w.touch()
			select {
			case <-storeErr:
				stopped = true
			default:
			}
			if stopped {
				for msg.Next() != nil {
				}
				continue
			}
			m := fs.readMessage(msg, w, bud)
			if m.broken != nil {
				// The connection died inside a literal. go-imap's reader has
				// moved on: touching this FETCH again (Next, Close) would
				// read the literal again, racing with it. The client is
				// closed; return.
				return &stepError{Step: stepFetch, Folder: f.Name, Err: s.end(w, m.broken)}
			}
			if m.row.UID == 0 {
				if m.body != nil {
					bud.give(int64(len(m.body)))
				}
				continue
			}
			if h := fs.e.hooks.fetched; h != nil {
				h(fs.mb.ID, m.row.UID)
			}
			w.pause()
			toWork <- m
			w.touch()
		}
		if err := s.end(w, cmd.Close()); err != nil {
			return &stepError{Step: stepFetch, Folder: f.Name, Err: err}
		}
		if stopped {
			return errStoreFailed
		}
	}
	return nil
}

// readMessage reads one FETCH response. The body is read whole (its size
// announced by the literal, within the pipeline's budget), or, past
// MaxMessageBytes, parsed as it streams and dropped.
func (fs *folderSync) readMessage(msg *imapclient.FetchMessageData, w *watchdog, bud *budget) *fetched {
	e := fs.e
	m := &fetched{}
	m.row.MailboxID, m.row.FolderID, m.row.UIDValidity = fs.mb.ID, fs.f.ID, fs.f.UIDValidity
	var gotBody bool
	for item := msg.Next(); item != nil; item = msg.Next() {
		switch it := item.(type) {
		case imapclient.FetchItemDataUID:
			m.row.UID = uint32(it.UID)
		case imapclient.FetchItemDataFlags:
			m.row.Flags = flagString(it.Flags)
		case imapclient.FetchItemDataInternalDate:
			m.row.InternalDate = it.Time.UTC().Truncate(time.Second)
		case imapclient.FetchItemDataRFC822Size:
			m.row.Size = it.Size
		case imapclient.FetchItemDataModSeq:
			m.row.ModSeq = it.ModSeq
		case imapclient.FetchItemDataBodySection:
			gotBody = true
			if it.Literal == nil {
				m.failed = errors.New("the server sent no body (NIL)")
				continue
			}
			fs.readBody(m, it.Literal, w, bud)
			if m.broken != nil {
				return m // no more msg.Next: see readAll
			}
		}
	}
	if m.row.UID != 0 && !gotBody && m.failed == nil {
		m.failed = errors.New("the server sent no body")
	}
	if m.row.InternalDate.IsZero() {
		m.row.InternalDate = e.now().Truncate(time.Second)
	}
	return m
}

// errReader remembers the first error other than io.EOF of a reader.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(b []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.r.Read(b)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// progressReader touches the watchdog as a long literal arrives.
type progressReader struct {
	r io.Reader
	w *watchdog
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.w.touch()
	}
	return n, err
}

func (fs *folderSync) readBody(m *fetched, lit imap.LiteralReader, w *watchdog, bud *budget) {
	e := fs.e
	size := lit.Size()
	if m.row.Size == 0 {
		m.row.Size = size
	}
	fs.res.Bodies++
	fs.res.Bytes += size
	e.count.bodies.Add(1)
	e.count.bytes.Add(size)
	e.metrics.bytes.Add(float64(size))
	src := progressReader{r: lit, w: w}
	if size > e.cfg.MaxMessageBytes {
		// Too large to keep: parse what the header says, drop the bytes.
		m.row.RawOmitted = true
		cr := &errReader{r: src}
		p, err := parseMessage(cr)
		if cr.err == nil {
			_, _ = io.Copy(io.Discard, cr)
		}
		if cr.err != nil {
			m.broken = fmt.Errorf("read body: %w", cr.err)
			return
		}
		if err != nil {
			m.failed = err
			return
		}
		fill(m, p)
		return
	}
	w.pause()
	bud.take(size)
	w.touch()
	// The literal's announced size bounds the read (a longer literal is
	// cut; the rest is dropped).
	body := make([]byte, size)
	n, err := io.ReadFull(src, body)
	if err == nil {
		_, err = io.Copy(io.Discard, src) // to the literal's end, which releases go-imap's reader
	}
	if err != nil {
		bud.give(size)
		m.broken = fmt.Errorf("read body: %w (%d of %d bytes)", err, n, size)
		return
	}
	m.body = body
}

// compress parses and gzips a body read whole; gz is reused by the
// worker.
func (fs *folderSync) compress(m *fetched, gz *gzip.Writer) *gzip.Writer {
	body := m.body
	m.body = nil
	p, err := parseMessage(bytes.NewReader(body))
	if err != nil {
		m.failed = err
		return gz
	}
	fill(m, p)
	var buf bytes.Buffer
	buf.Grow(len(body)/2 + 1024)
	if gz == nil {
		gz, _ = gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	} else {
		gz.Reset(&buf)
	}
	_, _ = gz.Write(body)
	_ = gz.Close() // writes to memory: no error
	m.row.Raw = buf.Bytes()
	return gz
}

func fill(m *fetched, p parsed) {
	r := &m.row
	r.MessageID, r.InReplyTo, r.Refs, r.SentAt = p.MessageID, p.InReplyTo, p.Refs, p.SentAt
	r.FromAddr, r.ToAddr, r.CcAddr = addressJSON(p.From), addressJSON(p.To), addressJSON(p.Cc)
	r.Subject, r.Snippet, r.Attachments = p.Subject, p.Snippet, stringsJSON(p.Attachments)
}
