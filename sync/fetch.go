package imapsync

import (
	"bytes"
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
//   - workers parse the bodies and encode them for storage (rawEncoder);
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
	spare := make(spareBodies, maxSpareBodies)
	toWrite := make(chan *fetched, 64)
	readDone := make(chan error, 1)
	writeDone := make(chan error, 1)

	workers := min(max(runtime.GOMAXPROCS(0), 1), maxWorkers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var enc rawEncoder
			for m := range toWork {
				if m.body != nil {
					n := int64(len(m.body))
					if b := fs.compress(m, &enc); b != nil {
						spare.put(b)
					}
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

	rerr := fs.readAll(uids, toWork, bud, spare, storeErrCh)
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

// fetchesInFlight is how many UID FETCHes readAll keeps sent: the next
// batch's goes out before this one's responses end, so that the server
// goes on to it without waiting for a round trip (interleaved 5,000-message
// runs over TLS, SQLite: 3.2 s on average with one, 2.9 s with two; three
// measured no better; docs/benchmarks.md, "IMAP sync").
const fetchesInFlight = 2

// arrival is what a FETCH's pump hands the reader: one message, or the end
// of its command.
type arrival struct {
	msg  *imapclient.FetchMessageData
	ack  chan struct{} // the reader is done with msg; the pump may go on
	done bool          // the command ended, with err
	err  error
}

// readAll sends the UID FETCHes, fetchesInFlight at a time, and reads
// every message into toWork.
//
// A server may answer pipelined FETCHes interleaved (Dovecot runs them in
// parallel), and go-imap hands each message to the command whose UIDs it
// belongs to, holding its reader until that message's literal is read. So
// each command has a pump goroutine that takes its messages one by one and
// passes each to this goroutine, which reads them in the order they come,
// whichever command they belong to, and lets the pump go on only when it
// is done with the message.
func (fs *folderSync) readAll(uids []uint32, toWork chan<- *fetched, bud *budget, spare spareBodies, storeErr <-chan struct{}) error {
	s, f := fs.s, fs.f
	opts := &imap.FetchOptions{
		UID: true, Flags: true, InternalDate: true, RFC822Size: true, ModSeq: s.condstore,
		BodySection: []*imap.FetchItemBodySection{{Peek: true}},
	}
	arrivals := make(chan arrival)
	quit := make(chan struct{}) // the connection broke: pumps stop touching it
	pump := func(cmd *imapclient.FetchCommand) {
		ack := make(chan struct{})
		for {
			msg := cmd.Next()
			if msg == nil {
				break
			}
			select {
			case arrivals <- arrival{msg: msg, ack: ack}:
			case <-quit:
				return
			}
			select {
			case <-ack:
			case <-quit:
				return
			}
		}
		select {
		case arrivals <- arrival{done: true, err: cmd.Close()}:
		case <-quit:
		}
	}
	bs := fs.e.cfg.BatchSize
	next, inFlight := 0, 0
	var (
		firstErr    error
		stopped     bool // draining: the store failed or a FETCH failed
		storeFailed bool
	)
	w := s.watch()
	for {
		for !stopped && inFlight < fetchesInFlight && next < len(uids) {
			cmd := s.c.Fetch(uidSet(uids[next:min(next+bs, len(uids))]), opts)
			next += bs
			inFlight++
			go pump(cmd)
		}
		if inFlight == 0 {
			break
		}
		a := <-arrivals
		w.touch()
		if a.done {
			inFlight--
			if a.err != nil && firstErr == nil {
				firstErr = a.err
				stopped = true
			}
			continue
		}
		if !stopped {
			select {
			case <-storeErr:
				stopped, storeFailed = true, true
			default:
			}
		}
		if stopped {
			for a.msg.Next() != nil {
			}
			a.ack <- struct{}{}
			continue
		}
		m := fs.readMessage(a.msg, w, bud, spare)
		if m.broken != nil {
			// The connection died inside a literal. go-imap's reader has
			// moved on: touching these FETCHes again (Next, Close) would
			// read the literal again, racing with it. The client is
			// closed; return.
			close(quit)
			return &stepError{Step: stepFetch, Folder: f.Name, Err: s.end(w, m.broken)}
		}
		a.ack <- struct{}{}
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
	if err := s.end(w, firstErr); err != nil {
		return &stepError{Step: stepFetch, Folder: f.Name, Err: err}
	}
	if storeFailed {
		return errStoreFailed
	}
	return nil
}

// readMessage reads one FETCH response. The body is read whole (its size
// announced by the literal, within the pipeline's budget), or, past
// MaxMessageBytes, parsed as it streams and dropped.
func (fs *folderSync) readMessage(msg *imapclient.FetchMessageData, w *watchdog, bud *budget, spare spareBodies) *fetched {
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
			fs.readBody(m, it.Literal, w, bud, spare)
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
	n   int64 // bytes read
}

func (e *errReader) Read(b []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.r.Read(b)
	e.n += int64(n)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// progressBytes is how much of a literal must arrive to count as progress
// for the watchdog: a server that drips a body a few bytes at a time
// (slowloris) still hits the command deadline.
const progressBytes = 16 << 10

// progressReader touches the watchdog as a long literal arrives, once per
// progressBytes.
type progressReader struct {
	r   io.Reader
	w   *watchdog
	got int // bytes since the last touch
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if p.got += n; p.got >= progressBytes {
		p.w.touch()
		p.got = 0
	}
	return n, err
}

func (fs *folderSync) readBody(m *fetched, lit imap.LiteralReader, w *watchdog, bud *budget, spare spareBodies) {
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
	src := &progressReader{r: lit, w: w}
	if size > e.cfg.MaxMessageBytes {
		// Too large to keep: parse what the header says, drop the bytes.
		m.row.RawOmitted = true
		cr := &errReader{r: src}
		p, err := parseMessage(cr)
		if cr.err == nil {
			_, _ = io.Copy(io.Discard, cr)
		}
		if cr.err == nil && cr.n < size {
			// The literal ended early without an error (the connection
			// was closed cleanly under it): the message is not whole.
			cr.err = fmt.Errorf("%w (%d of %d bytes)", io.ErrUnexpectedEOF, cr.n, size)
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
	body, err := readGrowing(src, size, spare.get(size))
	if err == nil {
		_, err = io.Copy(io.Discard, src) // to the literal's end, which releases go-imap's reader
	}
	if err != nil {
		bud.give(size)
		m.broken = fmt.Errorf("read body: %w (%d of %d bytes)", err, len(body), size)
		return
	}
	m.body = body
}

// bodyChunk is the most readGrowing allocates ahead of the bytes.
const bodyChunk = 1 << 20

// Bounds of the bodies the workers hand back to the reader for reuse.
const (
	maxSpareBodies = 4
	maxSpareBytes  = 4 << 20
)

// spareBodies carries body buffers the workers are done with back to the
// reader, which reads the next body into one when it is large enough:
// attachments are most of the bytes, and a fresh buffer for each cost the
// allocation, its zeroing and the page faults of memory the collector had
// given back.
type spareBodies chan []byte

// get returns an empty buffer with room for size bytes, or nil.
func (s spareBodies) get(size int64) []byte {
	select {
	case b := <-s:
		if int64(cap(b)) >= size {
			return b[:0]
		}
	default:
	}
	return nil
}

// put offers b for reuse; it is dropped when it is large or no room is left.
func (s spareBodies) put(b []byte) {
	if cap(b) > maxSpareBytes {
		return
	}
	select {
	case s <- b[:0]:
	default:
	}
}

// readGrowing reads exactly size bytes from r into a buffer that grows as
// they arrive (from bodyChunk, doubling, never past size), so that a
// server announcing a literal larger than what it sends costs only what
// it sent, not the announcement. spare, when its capacity holds size, is
// read into instead.
func readGrowing(r io.Reader, size int64, spare []byte) ([]byte, error) {
	buf := spare[:0]
	if spare == nil || int64(cap(spare)) < size {
		buf = make([]byte, 0, min(size, bodyChunk))
	}
	for int64(len(buf)) < size {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(size, 2*int64(cap(buf))))
			copy(grown, buf)
			buf = grown
		}
		n, err := r.Read(buf[len(buf):int(min(int64(cap(buf)), size))])
		buf = buf[:len(buf)+n]
		switch {
		case err == io.EOF && int64(len(buf)) < size:
			return buf, io.ErrUnexpectedEOF
		case err == io.EOF:
			return buf, nil
		case err != nil:
			return buf, err
		}
	}
	return buf, nil
}

// compress parses a body read whole and encodes it for storage; enc is
// the worker's (nil: a new one). It returns the body's buffer when the row
// does not keep it (the encoding is a copy), for reuse.
func (fs *folderSync) compress(m *fetched, enc *rawEncoder) (spare []byte) {
	if enc == nil {
		enc = &rawEncoder{}
	}
	body := m.body
	m.body = nil
	p, err := parseMessage(bytes.NewReader(body))
	if err != nil {
		m.failed = err
		return body
	}
	fill(m, p)
	m.row.Raw, m.row.RawCodec = enc.encode(body)
	switch {
	case m.row.RawCodec != codecNone:
		return body
	case cap(body) > 2*len(body)+64<<10:
		// Stored as it came, in a reused buffer much larger than itself:
		// keep a copy of its own size instead.
		m.row.Raw = bytes.Clone(body)
		return body
	}
	return nil
}

func fill(m *fetched, p parsed) {
	r := &m.row
	r.MessageID, r.InReplyTo, r.Refs, r.SentAt = p.MessageID, p.InReplyTo, p.Refs, p.SentAt
	r.FromAddr, r.ToAddr, r.CcAddr = addressJSON(p.From), addressJSON(p.To), addressJSON(p.Cc)
	r.Subject, r.Snippet, r.Attachments = p.Subject, p.Snippet, stringsJSON(p.Attachments)
}
