package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/mail"
	"net/url"
	"os"
	"strings"
	"time"
)

// Exit codes of "mailsync sendmail", sendmail's (sysexits.h).
const (
	exOK          = 0
	exUsage       = 64 // EX_USAGE: a mistake in the command line
	exDataErr     = 65 // EX_DATAERR: the message is malformed or too large
	exUnavailable = 69 // EX_UNAVAILABLE: the sender is refused (unroutable From)
	exIOErr       = 74 // EX_IOERR: standard input could not be read
	exTempFail    = 75 // EX_TEMPFAIL: the service is down or busy; keep the message and try again
	exNoPerm      = 77 // EX_NOPERM: the API token was refused
	exConfig      = 78 // EX_CONFIG: no service URL or token configured
)

const sendmailUsage = `Usage: mailsync sendmail [-t] [-i] [-f from] [-F name] [flags] [recipient ...]

Reads a message on standard input and submits it to the running mailsync
service, which routes it by its From header like the API.

  -t        take recipients from the To, Cc and Bcc headers too (Bcc is removed)
  -i, -oi   a line with a single dot does not end the message
  -f ADDR   envelope sender; the From of a message that has none, unless
            from is configured (also -r)
  -F NAME   the name in a From that -f or the configured from adds
  -v        print where the message was queued

Other sendmail flags (-odi, -oem, -B8BITMIME, -N…, -bm, …) are accepted and
ignored; -q does nothing. Without -t the recipients are the arguments.

Settings (environment, or "key = value" lines in the file MAILSYNC_CONFIG
names, which others than the owner and group must not be able to read):
  MAILSYNC_URL    url     the service, e.g. http://127.0.0.1:8080
  MAILSYNC_TOKEN  token   an API token (mst_…) of the user sending
  MAILSYNC_FROM   from    From for a message without one, or whose From is a
                          local name such as cron's "root"

Exit codes: 0 queued; 64 usage; 65 malformed or too large message; 69 sender
refused; 74 standard input unreadable; 75 service unavailable, try again
later; 77 token refused; 78 not configured.
`

// sendmailArgs is the parsed command line.
type sendmailArgs struct {
	readRcpts  bool // -t
	ignoreDots bool // -i, -oi
	from       string
	fullName   string
	verbose    bool
	rcpts      []string
	queueRun   bool // -q: nothing to do, mailsync has no local queue
	help       bool
}

// sendmailArgTakers are the flags of sendmail(8) that take a value, joined
// ("-fADDR") or as the next argument ("-f ADDR"), as getopt parses them.
const sendmailArgTakers = "ABCDFLMNORVXbdefhopr"

// parseSendmailArgs reads sendmail's command line as msmtp does: the flags
// mailsync implements, every other sendmail flag accepted and ignored, and
// recipients anywhere (comma-separated lists too).
func parseSendmailArgs(args []string) (sendmailArgs, error) {
	var a sendmailArgs
	for i := 0; i < len(args); i++ {
		arg := args[i]
		switch {
		case arg == "--":
			for _, r := range args[i+1:] {
				a.rcpts = append(a.rcpts, splitAddrs(r)...)
			}
			return a, nil
		case arg == "--help" || arg == "-help":
			a.help = true
			return a, nil
		case strings.HasPrefix(arg, "--"):
			continue // long options of other MTAs
		case len(arg) < 2 || arg[0] != '-':
			a.rcpts = append(a.rcpts, splitAddrs(arg)...)
			continue
		}
		cluster := arg[1:]
		for j := 0; j < len(cluster); j++ {
			flag := cluster[j]
			if flag == 'q' {
				a.queueRun = true
				break
			}
			if !strings.ContainsRune(sendmailArgTakers, rune(flag)) {
				switch flag {
				case 't':
					a.readRcpts = true
				case 'i':
					a.ignoreDots = true
				case 'v':
					a.verbose = true
				}
				continue // -c, -G, -I, -m, -n, -s, -T, -U, … are ignored
			}
			val := cluster[j+1:]
			if val == "" {
				if i+1 >= len(args) {
					return a, usageError{fmt.Sprintf("flag -%c needs a value", flag)}
				}
				i++
				val = args[i]
			}
			switch flag {
			case 'f', 'r':
				a.from = strings.Trim(strings.TrimSpace(val), "<>")
			case 'F':
				a.fullName = val
			case 'o':
				if val == "i" {
					a.ignoreDots = true
				}
			case 'b':
				if val != "m" {
					return a, usageError{fmt.Sprintf("-b%s is not supported: mailsync sendmail only submits messages (-bm)", val)}
				}
			}
			break
		}
	}
	return a, nil
}

func splitAddrs(s string) []string {
	var out []string
	for a := range strings.SplitSeq(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// sendmailConfig is where to submit and as whom.
type sendmailConfig struct {
	url, token, from string
}

// loadSendmailConfig reads MAILSYNC_CONFIG, if set, then the environment,
// which wins.
func loadSendmailConfig(getenv func(string) string) (sendmailConfig, error) {
	var c sendmailConfig
	if path := getenv("MAILSYNC_CONFIG"); path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("MAILSYNC_CONFIG: %w", err)
		}
		for n, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			k, v = strings.TrimSpace(k), strings.Trim(strings.TrimSpace(v), `"'`)
			switch {
			case !ok:
				return c, fmt.Errorf("%s line %d: want key = value", path, n+1)
			case k == "url":
				c.url = v
			case k == "token":
				c.token = v
			case k == "from":
				c.from = v
			default:
				return c, fmt.Errorf("%s line %d: unknown setting %q (url, token, from)", path, n+1, k)
			}
		}
		if c.token != "" {
			// The token lets anyone send as its user: like ssh with its keys,
			// refuse a file others may read. Group access is allowed, for the
			// web server's group.
			if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o007 != 0 {
				return c, fmt.Errorf("%s holds an API token but others may access it (mode %04o): chmod o-rwx %s",
					path, st.Mode().Perm(), path)
			}
		}
	}
	for env, dst := range map[string]*string{"MAILSYNC_URL": &c.url, "MAILSYNC_TOKEN": &c.token, "MAILSYNC_FROM": &c.from} {
		if v := getenv(env); v != "" {
			*dst = v
		}
	}
	switch {
	case c.url == "":
		return c, errors.New("no service URL: set MAILSYNC_URL or url in the MAILSYNC_CONFIG file")
	case c.token == "":
		return c, errors.New("no API token: set MAILSYNC_TOKEN or token in the MAILSYNC_CONFIG file")
	}
	if u, err := url.Parse(c.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, fmt.Errorf("the service URL %q is not an http:// or https:// URL", c.url)
	}
	return c, nil
}

// sendmailFail is a failure with its exit code; its message is one line.
type sendmailFail struct {
	code int
	msg  string
}

func (f *sendmailFail) Error() string { return f.msg }

func failf(code int, format string, args ...any) *sendmailFail {
	return &sendmailFail{code: code, msg: fmt.Sprintf(format, args...)}
}

// cmdSendmail is "mailsync sendmail": it returns the exit code itself, as
// sendmail's callers read it.
func cmdSendmail(ctx context.Context, e env, args []string) int {
	a, err := parseSendmailArgs(args)
	if err != nil {
		fmt.Fprintf(e.stderr, "mailsync sendmail: %v\n", err)
		return exUsage
	}
	if a.help {
		fmt.Fprint(e.stdout, sendmailUsage)
		return exOK
	}
	if a.queueRun {
		return exOK // mailsync's queue is the service's outbox
	}
	stdin := bufio.NewReaderSize(e.stdin, 64<<10)
	queued, err := sendmail(ctx, e, a, stdin)
	if err != nil {
		// Whoever writes the message is not cut off mid-write: read it to
		// its end (it keeps its copy and was told to retry where so).
		_, _ = io.Copy(io.Discard, stdin)
		var f *sendmailFail
		if !errors.As(err, &f) {
			f = &sendmailFail{code: exTempFail, msg: err.Error()}
		}
		fmt.Fprintf(e.stderr, "mailsync sendmail: %s\n", oneLine(f.msg))
		return f.code
	}
	if a.verbose {
		fmt.Fprintf(e.stdout, "mailsync sendmail: queued as <%s> (outbox id %d)\n", queued.MessageID, queued.ID)
	}
	return exOK
}

type queuedJSON struct {
	ID        int64  `json:"id"`
	Status    string `json:"status"`
	MessageID string `json:"message_id"`
}

// maxHeaderBytes bounds the header sendmail reads before it streams the
// rest: it must see the whole header for -t and for the From.
const maxHeaderBytes = 1 << 20

func sendmail(ctx context.Context, e env, a sendmailArgs, stdin *bufio.Reader) (queuedJSON, error) {
	if !a.readRcpts && len(a.rcpts) == 0 {
		return queuedJSON{}, errNoRcptArgs
	}
	cfg, err := loadSendmailConfig(e.getenv)
	if err != nil {
		return queuedJSON{}, failf(exConfig, "%v", err)
	}
	sub, err := prepareSubmission(a, cfg.from, stdin)
	if err != nil {
		return queuedJSON{}, err
	}
	q := url.Values{"rcpt": sub.rcpts}
	if sub.envFrom != "" {
		q.Set("from", sub.envFrom)
	}
	return postRaw(ctx, cfg, q, sub.msg)
}

var errNoRcptArgs = failf(exUsage, "no recipients: give them as arguments or use -t to read them from the message")

// sendmailSubmission is what sendmail posts: the envelope, and the message
// as its header (with the From sendmail may add) followed by the body
// streamed from standard input.
type sendmailSubmission struct {
	rcpts   []string // bare addresses, as bareAddress returns them
	envFrom string   // "" or a bare address
	msg     io.Reader
}

// prepareSubmission reads the header of the message on stdin and decides
// the envelope from it, the command line and the configured from. It does
// no I/O but reading stdin (FuzzSendmailInput drives it). Every recipient
// and the envelope sender are bare addresses that read back as themselves:
// no line break, NUL, comma or quoted local part reaches the service's
// query string or the From header sendmail writes.
func prepareSubmission(a sendmailArgs, cfgFrom string, stdin *bufio.Reader) (sendmailSubmission, error) {
	if !a.readRcpts && len(a.rcpts) == 0 {
		return sendmailSubmission{}, errNoRcptArgs
	}
	if cfgFrom != "" {
		addr, ok := bareAddress(cfgFrom)
		if !ok {
			return sendmailSubmission{}, failf(exConfig, "the configured from %q (MAILSYNC_FROM) is not an email address", cfgFrom)
		}
		cfgFrom = addr
	}
	envFrom := a.from
	if !strings.Contains(envFrom, "@") {
		envFrom = "" // -f root, as cron and mail(1) may pass: a local name, not an address
	} else if addr, ok := bareAddress(envFrom); ok {
		envFrom = addr
	} else {
		return sendmailSubmission{}, failf(exUsage, "the sender %q (-f) is not an email address", a.from)
	}
	var rcpts []string
	for _, r := range a.rcpts {
		addr, ok := bareAddress(r)
		if !ok {
			return sendmailSubmission{}, failf(exUsage, "the recipient %q is not an email address", r)
		}
		rcpts = append(rcpts, addr)
	}
	hdr, ended, err := readHeader(stdin, a.ignoreDots)
	if err != nil {
		return sendmailSubmission{}, err
	}
	fields := splitFields(hdr)
	if a.readRcpts {
		for _, f := range fields {
			if !f.is("To") && !f.is("Cc") && !f.is("Bcc") {
				continue
			}
			if strings.TrimSpace(f.value()) == "" {
				continue
			}
			list, err := mail.ParseAddressList(f.value())
			if err != nil {
				return sendmailSubmission{}, failf(exDataErr, "the %s header cannot be read: %v", f.name, err)
			}
			for _, ad := range list {
				addr, ok := bareAddress(ad.Address)
				if !ok {
					return sendmailSubmission{}, failf(exDataErr,
						"the %s header names %q, which mailsync sendmail cannot pass on as a recipient", f.name, ad.Address)
				}
				rcpts = append(rcpts, addr)
			}
		}
		if len(rcpts) == 0 {
			return sendmailSubmission{}, failf(exDataErr, "no recipients: the message has no To, Cc or Bcc and none were given")
		}
	}
	fields = fixFrom(fields, envFrom, cfgFrom, oneLine(a.fullName))

	var head bytes.Buffer
	for _, f := range fields {
		head.Write(f.raw)
	}
	head.Write(hdr.sep)
	var body io.Reader = bytes.NewReader(nil)
	if !ended {
		body = stdin
		if !a.ignoreDots {
			body = &dotReader{r: stdin, lineStart: true}
		}
	}
	return sendmailSubmission{rcpts: rcpts, envFrom: envFrom, msg: io.MultiReader(&head, body)}, nil
}

// bareAddress returns the addr-spec of s ("a@example.com", "<a@example.com>"
// or "Name <a@example.com>"), or false when s is none or its address does
// not read back as itself: a quoted local part such as "a,b"@example.com
// comes out of net/mail unquoted, and the service would split it at the
// comma.
func bareAddress(s string) (string, bool) {
	a, err := mail.ParseAddress(s)
	if err != nil {
		return "", false
	}
	back, err := mail.ParseAddress(a.Address)
	if err != nil || back.Name != "" || back.Address != a.Address {
		return "", false
	}
	return a.Address, true
}

// rawHeader is the header block as read, and what ended it.
type rawHeader struct {
	lines [][]byte // each with its line ending, as read
	sep   []byte   // the empty line ending the header, "" when the message ended first
}

// readHeader reads lines up to the empty line that ends the header. ended
// says the whole message was read (end of input, or a lone dot without -i).
func readHeader(r *bufio.Reader, ignoreDots bool) (h rawHeader, ended bool, err error) {
	total := 0
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return h, false, failf(exDataErr, "a header line is longer than %d bytes", r.Size())
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return h, false, failf(exIOErr, "read the message from standard input: %v", err)
		}
		eof := err != nil
		content := bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0 && eof:
			return h, true, nil
		case !ignoreDots && isDotLine(line):
			return h, true, nil
		case len(content) == 0 && len(line) > 0:
			h.sep = append([]byte(nil), line...)
			return h, eof, nil
		}
		total += len(line)
		if total > maxHeaderBytes {
			return h, false, failf(exDataErr, "the header is larger than %d bytes", maxHeaderBytes)
		}
		l := append([]byte(nil), line...)
		if eof && !bytes.HasSuffix(l, []byte("\n")) {
			l = append(l, '\n')
		}
		h.lines = append(h.lines, l)
		if eof {
			return h, true, nil
		}
	}
}

// hdrField is one header field: its name and its lines as read.
type hdrField struct {
	name string
	raw  []byte
}

func (f hdrField) is(name string) bool { return strings.EqualFold(f.name, name) }

// value is the unfolded field body.
func (f hdrField) value() string {
	_, v, _ := bytes.Cut(f.raw, []byte{':'})
	s := strings.NewReplacer("\r\n", "", "\n", "").Replace(string(v))
	return strings.TrimSpace(s)
}

// splitFields groups header lines into fields; a line that is not a field
// stays a field of its own without a name, for the service to judge.
func splitFields(h rawHeader) []hdrField {
	var out []hdrField
	for _, l := range h.lines {
		if (l[0] == ' ' || l[0] == '\t') && len(out) > 0 {
			out[len(out)-1].raw = append(out[len(out)-1].raw, l...)
			continue
		}
		name, _, _ := bytes.Cut(l, []byte{':'})
		out = append(out, hdrField{name: strings.TrimSpace(string(name)), raw: l})
	}
	return out
}

// fixFrom gives a message the From sendmail would: one built from the
// configured from (or else the envelope sender) and -F's name when the
// message has none, or when its From is a local name without a domain, such as
// cron's "root (Cron Daemon)".
func fixFrom(fields []hdrField, envFrom, cfgFrom, fullName string) []hdrField {
	// The configured from wins: mail(1) passes -f user@host on its own.
	addr := cfgFrom
	if addr == "" {
		addr = envFrom
	}
	if addr == "" {
		return fields
	}
	from := hdrField{name: "From", raw: []byte("From: " + (&mail.Address{Name: fullName, Address: addr}).String() + "\r\n")}
	for i, f := range fields {
		if f.is("From") {
			if strings.Contains(f.value(), "@") {
				return fields
			}
			fields[i] = from
			return fields
		}
	}
	// Last, not first: a header that starts with a continuation line or an
	// mbox "From " line would otherwise fold into it or follow it.
	return append(fields, from)
}

// dotReader ends the message at a line holding a single dot, as sendmail
// does without -i.
type dotReader struct {
	r         *bufio.Reader
	lineStart bool
	pending   []byte
	done      bool
}

func (d *dotReader) Read(p []byte) (int, error) {
	for len(d.pending) == 0 {
		if d.done {
			return 0, io.EOF
		}
		line, err := d.r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) && !errors.Is(err, io.EOF) {
			return 0, err
		}
		if d.lineStart && isDotLine(line) {
			d.done = true
			return 0, io.EOF
		}
		d.pending = append(d.pending[:0], line...)
		d.lineStart = bytes.HasSuffix(line, []byte("\n"))
		if errors.Is(err, io.EOF) {
			d.done = true
		}
	}
	n := copy(p, d.pending)
	d.pending = d.pending[n:]
	return n, nil
}

// isDotLine reports a line holding a single dot (at the end of input, its
// line break may be missing).
func isDotLine(line []byte) bool {
	switch string(line) {
	case ".", ".\n", ".\r\n":
		return true
	}
	return false
}

// postRaw submits the message and maps the answer to an exit code.
func postRaw(ctx context.Context, cfg sendmailConfig, q url.Values, body io.Reader) (queuedJSON, error) {
	endpoint := strings.TrimRight(cfg.url, "/") + "/api/v1/outbox/raw?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, body)
	if err != nil {
		return queuedJSON{}, failf(exConfig, "the service URL %q: %v", cfg.url, err)
	}
	req.Header.Set("Authorization", "Bearer "+cfg.token)
	req.Header.Set("Content-Type", "message/rfc822")
	req.Header.Set("User-Agent", "mailsync-sendmail/"+version)
	client := &http.Client{
		Timeout: 5 * time.Minute,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 2 * time.Minute,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return queuedJSON{}, failf(exTempFail, "the mailsync service at %s is not answering (%v); the message was not accepted: try again later",
			cfg.url, unwrapURLError(err))
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusAccepted {
		var out queuedJSON
		if err := json.Unmarshal(data, &out); err != nil || out.MessageID == "" {
			// Accepted, whatever the body says: a retry would send it twice.
			return queuedJSON{}, nil
		}
		return out, nil
	}
	var eb struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Field   string `json:"field"`
		} `json:"error"`
	}
	_ = json.Unmarshal(data, &eb)
	msg := eb.Error.Message
	if msg == "" {
		msg = strings.TrimSpace(string(data))
	}
	if eb.Error.Field != "" && eb.Error.Field != "from" {
		msg = eb.Error.Field + ": " + msg
	}
	st := resp.StatusCode
	switch {
	case st == http.StatusBadRequest || st == http.StatusRequestEntityTooLarge:
		return queuedJSON{}, failf(exDataErr, "the message was refused: %s", msg)
	case st == http.StatusUnauthorized:
		return queuedJSON{}, failf(exNoPerm, "the API token was refused (%s): check MAILSYNC_TOKEN", msg)
	case st == http.StatusForbidden || st == http.StatusUnprocessableEntity:
		return queuedJSON{}, failf(exUnavailable, "the sender was refused: %s", msg)
	case st == http.StatusTooManyRequests || st >= 500:
		return queuedJSON{}, failf(exTempFail, "the mailsync service answered %d (%s); the message was not accepted: try again later", st, msg)
	case st >= 300 && st < 400:
		return queuedJSON{}, failf(exConfig, "the service URL %s answered %d, a redirect to %q: set MAILSYNC_URL to the service itself",
			cfg.url, st, resp.Header.Get("Location"))
	default:
		return queuedJSON{}, failf(exUnavailable, "the mailsync service answered %d: %s", st, msg)
	}
}

// unwrapURLError drops net/http's "Post URL:" prefix, which repeats the
// token-free URL the message names already.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// oneLine keeps an error message on one line, as sendmail's callers log it.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
