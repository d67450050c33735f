package imapsync

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailsync/mailsync/mailbox"
)

// ErrCommandTimeout means an IMAP command made no progress within the
// command deadline: the connection was closed under it (go-imap v2 has no
// read timeout between responses, so a peer that stops answering would
// otherwise hold the command for ever).
var ErrCommandTimeout = errors.New("the IMAP server did not answer within the command deadline")

// Steps, for errors and the errors metric.
const (
	stepConnect = "connect"
	stepSelect  = "select"
	stepSearch  = "search"
	stepFlags   = "flags"
	stepFetch   = "fetch"
	stepParse   = "parse"
	stepStore   = "store"
	stepIdle    = "idle"
)

// stepError is a failure at one step of a folder sync.
type stepError struct {
	Step   string
	Folder string
	Err    error
}

func (e *stepError) Error() string {
	if e.Folder != "" {
		return fmt.Sprintf("%s %q: %v", e.Step, e.Folder, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Step, e.Err)
}

func (e *stepError) Unwrap() error { return e.Err }

// session is one logged-in IMAP connection, owned by one goroutine (the
// mailbox worker's, or SyncOnce's).
type session struct {
	c         *imapclient.Client
	caps      imap.CapSet
	condstore bool
	esearch   bool
	idle      bool
	timeout   time.Duration
	timedOut  atomic.Bool
	hints     chan struct{} // unsolicited EXISTS, EXPUNGE or FETCH: something changed in the selected folder
	onTimeout func()        // tests: the watchdog fired
}

// dial connects and logs in to the mailbox's server. ctx bounds the
// connection's life (its end closes the connection).
func (e *Engine) dial(ctx context.Context, mb mailbox.Mailbox) (*session, error) {
	set, err := e.mbs.IMAPSettingsOf(mb)
	if err != nil {
		return nil, err
	}
	s := &session{timeout: e.cfg.CommandTimeout, hints: make(chan struct{}, 1)}
	if h := e.hooks.timedOut; h != nil {
		s.onTimeout = func() { h(mb.ID) }
	}
	opts := &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		// Mailbox and Expunge run on imapclient's reader goroutine: they
		// must not block.
		Mailbox: func(data *imapclient.UnilateralDataMailbox) {
			if data.NumMessages != nil {
				s.hint()
			}
		},
		Expunge: func(uint32) { s.hint() },
		Fetch: func(msg *imapclient.FetchMessageData) {
			for msg.Next() != nil {
			}
			s.hint()
		},
	}}
	c, err := e.mbs.IMAP().DialWithOptions(ctx, set, opts)
	if err != nil {
		return nil, err
	}
	s.c = c
	err = s.guard(func() error {
		s.caps = c.Caps()
		if s.caps == nil {
			return errors.New("no CAPABILITY from the server")
		}
		return nil
	})
	if err != nil {
		s.close()
		return nil, &stepError{Step: stepConnect, Err: err}
	}
	s.condstore = s.caps.Has(imap.CapCondStore) && !e.cfg.NoCondStore
	s.esearch = s.caps.Has(imap.CapESearch) || s.caps.Has(imap.CapIMAP4rev2)
	s.idle = s.caps.Has(imap.CapIdle) || s.caps.Has(imap.CapIMAP4rev2)
	return s, nil
}

func (s *session) hint() {
	select {
	case s.hints <- struct{}{}:
	default:
	}
}

// drainHints forgets the hints received so far.
func (s *session) drainHints() {
	select {
	case <-s.hints:
	default:
	}
}

// close logs out (bounded by the command deadline) and closes.
func (s *session) close() {
	if s.c == nil {
		return
	}
	_ = s.guard(func() error { return s.c.Logout().Wait() })
	_ = s.c.Close()
}

// watchdog closes the connection when a command makes no progress for the
// session's timeout; touch reports progress.
type watchdog struct {
	t *time.Timer
	d time.Duration
}

func (s *session) watch() *watchdog {
	w := &watchdog{d: s.timeout}
	w.t = time.AfterFunc(s.timeout, func() {
		s.timedOut.Store(true)
		if s.onTimeout != nil {
			s.onTimeout()
		}
		_ = s.c.Close()
	})
	return w
}

func (w *watchdog) touch() { w.t.Reset(w.d) }

// pause stops the clock while the caller waits on itself (the pipeline),
// not on the server; touch starts it again.
func (w *watchdog) pause() { w.t.Stop() }

// end stops the watchdog and turns err into ErrCommandTimeout when the
// watchdog closed the connection.
func (s *session) end(w *watchdog, err error) error {
	w.t.Stop()
	if s.timedOut.Load() {
		if err == nil {
			err = errors.New("connection closed")
		}
		return fmt.Errorf("%w (%v)", ErrCommandTimeout, err)
	}
	return err
}

// guard runs one command under the deadline.
func (s *session) guard(f func() error) error {
	w := s.watch()
	return s.end(w, f())
}

// selectFolder opens a folder read-only (EXAMINE: the sync changes no
// flag), with CONDSTORE when the server has it, so the reply carries
// HIGHESTMODSEQ (RFC 7162 3.1.2.1).
func (s *session) selectFolder(name string) (*imap.SelectData, error) {
	var data *imap.SelectData
	err := s.guard(func() error {
		var err error
		data, err = s.c.Select(name, &imap.SelectOptions{ReadOnly: true, CondStore: s.condstore}).Wait()
		return err
	})
	if err != nil {
		return nil, &stepError{Step: stepSelect, Folder: name, Err: err}
	}
	if data.UIDValidity == 0 {
		// RFC 3501 2.3.1.1 requires it, and without it no stored UID can
		// be trusted from one session to the next.
		return nil, &stepError{Step: stepSelect, Folder: name, Err: errNoUIDValidity}
	}
	return data, nil
}

// errNoUIDValidity: the server's SELECT/EXAMINE gave no UIDVALIDITY (or 0).
var errNoUIDValidity = errors.New("the server sent no UIDVALIDITY (or 0) for the folder, so its UIDs cannot be trusted")

// searchAll returns every UID of the selected folder, ascending: UID
// SEARCH ALL, with RETURN (ALL) when the server has ESEARCH (RFC 4731), so
// the answer is a compact set. go-imap v2 beta cannot parse VANISHED
// (QRESYNC), so expunges are found by diffing this set with the stored
// UIDs.
func (s *session) searchAll(folder string) ([]uint32, error) {
	var opts *imap.SearchOptions
	if s.esearch {
		opts = &imap.SearchOptions{ReturnAll: true}
	}
	var data *imap.SearchData
	err := s.guard(func() error {
		var err error
		data, err = s.c.UIDSearch(&imap.SearchCriteria{}, opts).Wait()
		return err
	})
	if err != nil {
		return nil, &stepError{Step: stepSearch, Folder: folder, Err: err}
	}
	var exists uint32
	if sel := s.c.Mailbox(); sel != nil {
		exists = sel.NumMessages
	}
	uids, err := resultUIDs(data, exists)
	if err != nil {
		return nil, &stepError{Step: stepSearch, Folder: folder, Err: err}
	}
	return uids, nil
}

// searchSlack is how many more UIDs than messages a SEARCH result may
// list (messages that arrived before their EXISTS did).
const searchSlack = 10000

// resultUIDs returns the UIDs of a UID SEARCH result, ascending, without
// trusting the server: UID 0 and "*", which no result may hold (go-imap
// reads 0 as "*" and its AllUIDs panics on it), are dropped, and a result
// listing more UIDs than the folder has messages (plus searchSlack) is
// refused before it is expanded — ESEARCH says 1:4294967295 in a few
// bytes.
func resultUIDs(data *imap.SearchData, exists uint32) ([]uint32, error) {
	set, _ := data.All.(imap.UIDSet)
	var n uint64
	for _, r := range set {
		if r.Start != 0 && r.Stop != 0 {
			n += uint64(max(r.Start, r.Stop)-min(r.Start, r.Stop)) + 1
		}
	}
	if n > uint64(exists)+searchSlack {
		return nil, fmt.Errorf("the server's SEARCH lists %d UIDs but the folder has %d messages", n, exists)
	}
	out := make([]uint32, 0, n)
	for _, r := range set {
		if r.Start == 0 || r.Stop == 0 {
			continue
		}
		for u := min(r.Start, r.Stop); ; u++ {
			out = append(out, uint32(u))
			if u == max(r.Start, r.Stop) {
				break
			}
		}
	}
	return sortedUnique(out), nil
}

func uidSet(uids []uint32) imap.UIDSet {
	var set imap.UIDSet
	for _, u := range uids {
		set.AddNum(imap.UID(u))
	}
	return set
}
