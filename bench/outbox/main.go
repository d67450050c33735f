// Command outbox measures how fast mailsync sends a portal's mail, beside
// the two things it replaces or builds on, all in the same run and against
// the same local SMTP sink (STARTTLS + AUTH, certificate from a CA generated
// for the run):
//
//   - raw: a bare go-mail loop sending every message over one reused,
//     authenticated connection: the limit of one sender on this machine;
//   - msmtp: one msmtp process per message, as PHP's sendmail_path runs it;
//   - mailsync: "mailsync serve" as a child process with the account created
//     through the API and every message submitted with POST /api/v1/outbox
//     by concurrent clients, timed from the first submit until the sink has
//     them all; on SQLite, and on PostgreSQL when -postgres names a server.
//
// It prints a Markdown table, the ratios against the goals (mailsync ≥ 50 %
// of raw, ≥ 50× msmtp, peak RSS < 150 MB) and the machine. See run.sh and
// docs/benchmarks.md.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", to create the PostgreSQL database
	gomail "github.com/wneessen/go-mail"

	"github.com/mailsync/mailsync/internal/benchstat"
	"github.com/mailsync/mailsync/internal/secret"
)

const (
	sender    = "site@example.com"
	password  = "Bench-Pa55word"
	recipient = "someone@example.org"
)

type options struct {
	n, msmtpN, size, clients, conns int
	rounds                          int
	split                           bool
	mailsync, msmtp, postgres       string
	work, only, logLevel            string
	timeout                         time.Duration
}

type result struct {
	round   int // 1…; msmtp runs in round 1 only
	name    string
	n       int
	elapsed time.Duration
	rssKB   int64  // peak resident set of the sending process; 0 = not measured
	note    string // extra figures
	// mailsync with -split: the same n queued while the sink holds every
	// transaction (accepting only), then sent from the full queue.
	accept, drain time.Duration
	// CPU used by serve and by this program (sink and clients) while
	// sending only.
	drainCPU, drainSelfCPU time.Duration
}

func (r result) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

func main() {
	var o options
	flag.IntVar(&o.n, "n", 10000, "messages for the raw loop and for mailsync")
	flag.IntVar(&o.msmtpN, "msmtp-n", 300, "messages for msmtp (one process each, so fewer)")
	flag.IntVar(&o.size, "size", 10240, "approximate size of the message text in bytes")
	flag.IntVar(&o.rounds, "rounds", 1, "rounds of raw loop and mailsync runs, back to back (the raw loop first in odd rounds, last in even ones); ratios are taken within a round, and their median is the result")
	flag.IntVar(&o.clients, "clients", 8, "concurrent API clients submitting to mailsync")
	flag.IntVar(&o.conns, "conns", 0, "MAILSYNC_SMTP_CONNS_PER_ACCOUNT for mailsync (0 = its default)")
	flag.StringVar(&o.mailsync, "mailsync", "", "path of the mailsync binary (required for the mailsync runs)")
	flag.StringVar(&o.msmtp, "msmtp", "msmtp", "msmtp command")
	flag.StringVar(&o.postgres, "postgres", "", "postgres:// URL of a server where a scratch database may be created; empty = SQLite only")
	flag.StringVar(&o.work, "work", "", "folder for data, logs and msmtprc (default: a new temporary folder)")
	flag.StringVar(&o.only, "only", "raw,msmtp,sqlite,postgres", "comma-separated runs to do")
	flag.StringVar(&o.logLevel, "log-level", "info", "MAILSYNC_LOG_LEVEL of the serve process (its log goes to a file)")
	flag.BoolVar(&o.split, "split", true, "after the timed mailsync run, time accepting and sending apart: queue n more while the sink holds, then release it")
	flag.DurationVar(&o.timeout, "timeout", 15*time.Minute, "bound on the whole run")
	flag.Parse()
	if o.rounds < 1 {
		fmt.Fprintln(os.Stderr, "bench: -rounds must be at least 1")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	if o.work == "" {
		dir, err := os.MkdirTemp("", "mailsync-bench-")
		if err != nil {
			return err
		}
		o.work = dir
	}
	if err := os.MkdirAll(o.work, 0o700); err != nil {
		return err
	}
	ca, err := newCA()
	if err != nil {
		return err
	}
	caFile := filepath.Join(o.work, "ca.pem")
	if err := os.WriteFile(caFile, ca.pem, 0o600); err != nil {
		return err
	}
	sk, err := startSink(ca, sender, password)
	if err != nil {
		return err
	}
	defer sk.close()
	body := messageText(o.size)
	want := map[string]bool{}
	for r := range strings.SplitSeq(o.only, ",") {
		want[strings.TrimSpace(r)] = true
	}
	fmt.Printf("work folder %s, sink on 127.0.0.1:%d\n", o.work, sk.port())

	var results []result
	add := func(round int, r result, err error, what string) error {
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		r.round = round
		results = append(results, r)
		fmt.Printf("  round %d, %s: %.1f msg/s\n", round, r.name, r.rate())
		return nil
	}
	for round := 1; round <= o.rounds; round++ {
		ro := o
		ro.split = o.split && round == 1
		if o.rounds > 1 { // a fresh data folder (and log) per round
			ro.work = filepath.Join(o.work, fmt.Sprintf("round-%d", round))
			if err := os.MkdirAll(ro.work, 0o700); err != nil {
				return err
			}
		}
		raw := func() error {
			if !want["raw"] {
				return nil
			}
			r, err := runRaw(ctx, ro, sk, ca, body)
			return add(round, r, err, "raw")
		}
		if round%2 == 1 {
			if err := raw(); err != nil {
				return err
			}
		}
		if want["msmtp"] && round == 1 {
			r, err := runMsmtp(ctx, ro, sk, caFile, body)
			if err := add(round, r, err, "msmtp"); err != nil {
				return err
			}
		}
		if want["sqlite"] {
			r, err := runMailsync(ctx, ro, sk, caFile, body, "SQLite", nil)
			if err := add(round, r, err, "mailsync on SQLite"); err != nil {
				return err
			}
		}
		if want["postgres"] && o.postgres != "" {
			if err := runPostgres(ctx, ro, sk, caFile, body, func(r result, err error) error {
				return add(round, r, err, "mailsync on PostgreSQL")
			}); err != nil {
				return err
			}
		}
		if round%2 == 0 {
			if err := raw(); err != nil {
				return err
			}
		}
	}
	if n := sk.plainTx.Load(); n > 0 {
		return fmt.Errorf("%d transactions reached the sink without TLS", n)
	}
	report(os.Stdout, o, results)
	fmt.Printf("sink: every transaction under STARTTLS after AUTH (mechanisms used: %s)\n", sk.mechanisms())
	return nil
}

// runPostgres runs mailsync on a scratch PostgreSQL database and passes the
// outcome to add.
func runPostgres(ctx context.Context, o options, sk *sink, caFile, body string, add func(result, error) error) error {
	dsn, drop, err := scratchDatabase(ctx, o.postgres)
	if err != nil {
		return fmt.Errorf("PostgreSQL: %w", err)
	}
	defer drop()
	key, err := secret.GenerateKey()
	if err != nil {
		return err
	}
	return add(runMailsync(ctx, o, sk, caFile, body, "PostgreSQL",
		[]string{"MAILSYNC_DB=" + dsn, "MAILSYNC_SECRET_KEY=" + key}))
}

// messageText is about size bytes of plain ASCII text in lines of at most
// 72 characters, the same for every contender: words drawn from a fixed
// vocabulary by a seeded generator, so that it compresses about as well as
// written text does (S2 to about half; a repeated sentence would shrink to
// a tenth and flatter a store that compresses).
func messageText(size int) string {
	words := strings.Fields(`the of and to in is you that it he was for on are as with his they at be this
		have from or one had by word but not what all were we when your can said there use an each which she
		do how their if will up other about out many then them these so some her would make like him into
		time has look two more write go see number no way could people my than first water been call who oil
		its now find long down day did get come made may part invoice order delivery meeting quarter report
		contract payment schedule customer account manager project update review budget proposal attached
		regards please thanks tomorrow monday friday office team sales support ticket request confirm price
		discount shipment warehouse release version feature question answer agenda minutes summary`)
	rng := mrand.New(mrand.NewPCG(1, 2))
	var b strings.Builder
	line := 0
	for b.Len() < size {
		w := words[rng.IntN(len(words))]
		if rng.IntN(12) == 0 {
			w = strconv.Itoa(rng.IntN(100000))
		}
		if line > 0 && line+1+len(w) > 72 {
			b.WriteString("\n")
			line = 0
		}
		if line > 0 {
			b.WriteByte(' ')
			line++
		}
		b.WriteString(w)
		line += len(w)
	}
	b.WriteString("\n")
	return b.String()
}

// newMsg builds message i the way a portal would: From, To, Subject, a
// unique Message-ID, Date, a plain-text body.
func newMsg(tag string, i int, body string) (*gomail.Msg, error) {
	m := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	if err := m.From(sender); err != nil {
		return nil, err
	}
	if err := m.To(recipient); err != nil {
		return nil, err
	}
	m.Subject(fmt.Sprintf("Benchmark %s %d", tag, i))
	m.SetMessageIDWithValue(fmt.Sprintf("%s.%d.%s@example.com", tag, i, randomHex(6)))
	m.SetDate()
	m.SetBodyString(gomail.TypeTextPlain, body)
	return m, nil
}

// runRaw sends n messages with go-mail over one connection: dial, STARTTLS
// and AUTH once, then Send in a loop (go-mail's own NOOP check and RSET
// included, as a plain go-mail user gets them).
func runRaw(ctx context.Context, o options, sk *sink, ca *testCA, body string) (result, error) {
	sk.reset()
	c, err := gomail.NewClient("localhost",
		gomail.WithPort(sk.port()),
		gomail.WithTLSPolicy(gomail.TLSMandatory),
		gomail.WithTLSConfig(&tls.Config{RootCAs: ca.pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}),
		gomail.WithSMTPAuth(gomail.SMTPAuthPlain),
		gomail.WithUsername(sender), gomail.WithPassword(password),
		gomail.WithTimeout(time.Minute),
		gomail.WithHELO("bench.localhost"),
	)
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	if err := c.DialWithContext(ctx); err != nil {
		return result{}, fmt.Errorf("dial: %w", err)
	}
	for i := range o.n {
		m, err := newMsg("raw", i, body)
		if err != nil {
			return result{}, err
		}
		if err := c.Send(m); err != nil {
			_ = c.Close()
			return result{}, fmt.Errorf("message %d: %w", i, err)
		}
	}
	if err := sk.wait(ctx, o.n); err != nil {
		return result{}, err
	}
	elapsed := time.Since(start)
	_ = c.Close()
	got, distinct, size := sk.stats()
	if distinct != o.n {
		return result{}, fmt.Errorf("the sink has %d distinct Message-IDs of %d", distinct, o.n)
	}
	return result{name: "go-mail loop, 1 reused connection (raw limit)", n: got, elapsed: elapsed,
		note: fmt.Sprintf("%.1f KB/message at the sink", float64(size)/float64(got)/1024)}, nil
}

// runMsmtp sends msmtpN messages with one msmtp process each, one after the
// other, as PHP's mail() does through sendmail_path.
func runMsmtp(ctx context.Context, o options, sk *sink, caFile, body string) (result, error) {
	rc := filepath.Join(o.work, "msmtprc")
	conf := fmt.Sprintf(`defaults
tls on
tls_starttls on
tls_trust_file %s
logfile
syslog off

account bench
host localhost
port %d
from %s
auth on
user %s
password %s

account default : bench
`, caFile, sk.port(), sender, sender, password)
	if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
		return result{}, err
	}
	version, _ := exec.CommandContext(ctx, o.msmtp, "--version").Output()
	first, _, _ := strings.Cut(string(version), "\n")
	sk.reset()
	var maxRSS int64
	var raw bytes.Buffer
	start := time.Now()
	for i := range o.msmtpN {
		m, err := newMsg("msmtp", i, body)
		if err != nil {
			return result{}, err
		}
		raw.Reset()
		if _, err := m.WriteTo(&raw); err != nil {
			return result{}, err
		}
		cmd := exec.CommandContext(ctx, o.msmtp, "-C", rc, "-a", "bench", recipient)
		cmd.Stdin = &raw
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return result{}, fmt.Errorf("message %d: %w: %s", i, err, stderr.Bytes())
		}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			maxRSS = max(maxRSS, ru.Maxrss)
		}
	}
	if err := sk.wait(ctx, o.msmtpN); err != nil {
		return result{}, err
	}
	elapsed := time.Since(start)
	_, distinct, _ := sk.stats()
	if distinct != o.msmtpN {
		return result{}, fmt.Errorf("the sink has %d distinct Message-IDs of %d", distinct, o.msmtpN)
	}
	return result{name: "msmtp, 1 process per message", n: o.msmtpN, elapsed: elapsed, rssKB: maxRSS,
		note: strings.TrimSpace(first)}, nil
}

var (
	listenRE = regexp.MustCompile(`listening on (http://\S+)`)
	tokenRE  = regexp.MustCompile(`^\s*(mst_\S+)\s*$`)
	sentRE   = regexp.MustCompile(`(?m)^mailsync_outbox_messages\{status="sent"\} (\d+)`)
)

// runMailsync starts "mailsync serve" on a fresh data folder, creates the
// account through the API, submits n messages from concurrent clients and
// times them until the sink has every one. It then waits (bounded poll of
// /metrics) until the outbox has recorded them all as sent.
func runMailsync(ctx context.Context, o options, sk *sink, caFile, body, dbName string, extraEnv []string) (result, error) {
	if o.mailsync == "" {
		return result{}, errors.New("-mailsync is not set")
	}
	label := "mailsync-" + strings.ToLower(dbName)
	dataDir := filepath.Join(o.work, label)
	logPath := filepath.Join(o.work, label+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return result{}, err
	}
	defer logFile.Close()
	cmd := exec.Command(o.mailsync, "serve", "-listen", "127.0.0.1:0", "-submission-listen", "off")
	cmd.Env = append(os.Environ(),
		"MAILSYNC_DATA_DIR="+dataDir,
		"MAILSYNC_ALLOW_HOSTS=127.0.0.0/8",
		"MAILSYNC_EXTRA_CA_FILE="+caFile,
		"MAILSYNC_LOG_LEVEL="+o.logLevel,
	)
	if o.conns > 0 {
		cmd.Env = append(cmd.Env, "MAILSYNC_SMTP_CONNS_PER_ACCOUNT="+strconv.Itoa(o.conns))
	}
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.Stderr = logFile
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return result{}, err
	}
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	exited := make(chan struct{})
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		})
	}
	defer stop()

	lines := make(chan string, 64)
	go func() {
		// Every line goes to lines while it has room (serve prints a few);
		// Wait comes after the last read, as os/exec requires.
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
		_ = cmd.Wait()
		close(exited)
	}()
	base, token, err := readStartup(ctx, lines)
	if err != nil {
		return result{}, fmt.Errorf("%w (log: %s)", err, logPath)
	}
	api := &apiClient{base: base, token: token, http: &http.Client{
		Timeout:   2 * time.Minute,
		Transport: &http.Transport{MaxIdleConnsPerHost: o.clients, MaxConnsPerHost: o.clients},
	}}
	acct, _ := json.Marshal(map[string]any{
		"email": sender, "host": "localhost", "port": sk.port(), "security": "starttls",
		"auth": "login", "login": sender, "password": password,
	})
	if code, out, err := api.post(ctx, "/api/v1/smtp-accounts", acct); err != nil || code != http.StatusCreated {
		return result{}, fmt.Errorf("create the account: %d %s %v", code, out, err)
	}
	payload, _ := json.Marshal(map[string]any{
		"from": sender, "to": []string{recipient}, "subject": "Benchmark mailsync", "text": body,
	})

	sk.reset()
	start := time.Now()
	if err := api.submitAll(ctx, o.n, o.clients, payload); err != nil {
		return result{}, err
	}
	submitted := time.Since(start)
	atAccepted, _, _ := sk.stats()
	if err := sk.wait(ctx, o.n); err != nil {
		return result{}, fmt.Errorf("%w (log: %s)", err, logPath)
	}
	delivered := time.Since(start)
	if err := api.waitSent(ctx, o.n); err != nil {
		return result{}, fmt.Errorf("%w (log: %s)", err, logPath)
	}
	rss := vmHWM(cmd.Process.Pid)
	cpu := cpuTime(cmd.Process.Pid)
	recordedAt := time.Since(start)
	got, distinct, _ := sk.stats()
	if distinct != o.n {
		return result{}, fmt.Errorf("the sink has %d distinct Message-IDs of %d", distinct, o.n)
	}
	note := fmt.Sprintf("all accepted (202) after %.1f s = %.0f msg/s, when the sink had %d; all recorded sent after %.1f s; %d arrivals for %d messages; "+
		"serve used %.1f s of CPU = %.2f ms per message",
		submitted.Seconds(), float64(o.n)/submitted.Seconds(), atAccepted, recordedAt.Seconds(), got, distinct,
		cpu.Seconds(), cpu.Seconds()*1000/float64(o.n))
	var accept, drain, drainCPU, drainSelfCPU time.Duration
	if o.split {
		// Accepting alone: the sink holds MAIL FROM, so the worker's
		// connections stall and the API has the machine. Then sending
		// alone, from the full queue.
		sk.hold()
		sk.reset()
		start := time.Now()
		if err := api.submitAll(ctx, o.n, o.clients, payload); err != nil {
			sk.release()
			return result{}, err
		}
		accept = time.Since(start)
		cpu0, self0 := cpuTime(cmd.Process.Pid), selfCPU()
		start = time.Now()
		sk.release()
		if err := sk.wait(ctx, o.n); err != nil {
			return result{}, fmt.Errorf("%w (log: %s)", err, logPath)
		}
		drain = time.Since(start)
		drainCPU, drainSelfCPU = cpuTime(cmd.Process.Pid)-cpu0, selfCPU()-self0
		if err := api.waitSent(ctx, 2*o.n); err != nil {
			return result{}, fmt.Errorf("%w (log: %s)", err, logPath)
		}
		if _, d, _ := sk.stats(); d != o.n {
			return result{}, fmt.Errorf("split run: the sink has %d distinct Message-IDs of %d", d, o.n)
		}
		note += fmt.Sprintf("; peak RSS after the split run (%d messages in all) %.1f MB", 2*o.n, float64(vmHWM(cmd.Process.Pid))/1024)
	}
	stop()
	conns := o.conns
	if conns == 0 {
		conns = 2
	}
	return result{
		name: fmt.Sprintf("mailsync serve, %s, %d SMTP connections", dbName, conns), n: o.n, elapsed: delivered, rssKB: rss,
		accept: accept, drain: drain, drainCPU: drainCPU, drainSelfCPU: drainSelfCPU,
		note: note,
	}, nil
}

// readStartup reads serve's first lines: the URL and the admin's token.
func readStartup(ctx context.Context, lines <-chan string) (base, token string, err error) {
	timeout := time.After(30 * time.Second)
	for base == "" || token == "" {
		select {
		case <-ctx.Done():
			return "", "", ctx.Err()
		case <-timeout:
			return "", "", errors.New("serve printed no URL and token within 30 s")
		case l, ok := <-lines:
			if !ok {
				return "", "", errors.New("serve exited before printing its URL and token")
			}
			if m := listenRE.FindStringSubmatch(l); m != nil {
				base = m[1]
			}
			if m := tokenRE.FindStringSubmatch(l); m != nil {
				token = m[1]
			}
		}
	}
	return base, token, nil
}

type apiClient struct {
	base, token string
	http        *http.Client
}

func (a *apiClient) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

func (a *apiClient) post(ctx context.Context, path string, body []byte) (int, []byte, error) {
	return a.do(ctx, http.MethodPost, path, body)
}

// submitAll posts n messages from clients concurrent clients; every answer
// must be 202.
func (a *apiClient) submitAll(ctx context.Context, n, clients int, payload []byte) error {
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for i := range next {
				code, out, err := a.post(ctx, "/api/v1/outbox", payload)
				if err != nil || code != http.StatusAccepted {
					errs <- fmt.Errorf("submit %d: %d %s %v", i, code, out, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs // nil when the channel is empty
}

// waitSent polls /metrics until the outbox counts n sent messages. Nothing
// can be waited on from outside the process, so this is a bounded poll with
// a short backoff.
func (a *apiClient) waitSent(ctx context.Context, n int) error {
	start := time.Now()
	delay := 5 * time.Millisecond
	for {
		code, out, err := a.do(ctx, http.MethodGet, "/metrics", nil)
		if err == nil && code == http.StatusOK {
			if m := sentRE.FindSubmatch(out); m != nil {
				if v, _ := strconv.Atoi(string(m[1])); v >= n {
					return nil
				}
			}
		}
		if time.Since(start) > 2*time.Minute {
			return fmt.Errorf("the outbox did not record %d sent messages within 2 minutes", n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 100*time.Millisecond)
	}
}

// vmHWM returns the peak resident set of a process in KB, from
// /proc/PID/status.
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb
		}
	}
	return 0
}

// cpuTime returns the user and system CPU time a process used so far, from
// /proc/PID/stat.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; the fields after it do not.
	_, rest, ok := strings.Cut(string(b), ") ")
	if !ok {
		return 0
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks
}

// selfCPU returns the CPU time this program used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// scratchDatabase creates an empty database on the server of dsn and
// returns its DSN and a function dropping it.
func scratchDatabase(ctx context.Context, dsn string) (string, func(), error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", nil, err
	}
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		return "", nil, err
	}
	name := "mailsync_bench_" + randomHex(6)
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("create database %s on %s: %w", name, u.Redacted(), err)
	}
	drop := func() {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			fmt.Fprintf(os.Stderr, "bench: drop database %s: %v\n", name, err)
		}
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// report prints the table, the ratios against the goals and the machine.
func report(w io.Writer, o options, rs []result) {
	fmt.Fprintf(w, "\n| round | run | messages | seconds | messages/s | peak RSS |\n| ---: | --- | ---: | ---: | ---: | ---: |\n")
	raws := map[int]*result{} // by round
	var msmtp *result
	for i, r := range rs {
		rss := "—"
		if r.rssKB > 0 {
			rss = fmt.Sprintf("%.1f MB", float64(r.rssKB)/1024)
		}
		fmt.Fprintf(w, "| %d | %s | %d | %.2f | %.1f | %s |\n", r.round, r.name, r.n, r.elapsed.Seconds(), r.rate(), rss)
		switch {
		case strings.HasPrefix(r.name, "go-mail"):
			raws[r.round] = &rs[i]
		case strings.HasPrefix(r.name, "msmtp"):
			msmtp = &rs[i]
		}
	}
	split := false
	for _, r := range rs {
		split = split || r.drain > 0
	}
	if split {
		fmt.Fprintf(w, "\nThe same mailsync process (round 1), %d more messages, accepting and sending timed apart:\n\n", o.n)
		fmt.Fprintf(w, "| run | accepting only (202s), messages/s | sending only (full queue), messages/s | sending / raw limit | CPU per message sent: serve, sink |\n| --- | ---: | ---: | ---: | ---: |\n")
		for _, r := range rs {
			if r.drain == 0 {
				continue
			}
			d := float64(r.n) / r.drain.Seconds()
			q := "—"
			if raw := raws[r.round]; raw != nil {
				q = fmt.Sprintf("%.2f", d/raw.rate())
			}
			fmt.Fprintf(w, "| %s | %.0f | %.0f | %s | %.2f ms, %.2f ms |\n", r.name, float64(r.n)/r.accept.Seconds(), d, q,
				r.drainCPU.Seconds()*1000/float64(r.n), r.drainSelfCPU.Seconds()*1000/float64(r.n))
		}
	}
	fmt.Fprintln(w)
	for _, r := range rs {
		if r.note != "" {
			fmt.Fprintf(w, "- round %d, %s: %s\n", r.round, r.name, r.note)
		}
	}
	fmt.Fprintln(w)
	var names []string
	ratios, rates := map[string][]float64{}, map[string][]float64{}
	rss := map[string]int64{}
	for _, r := range rs {
		if !strings.HasPrefix(r.name, "mailsync") {
			continue
		}
		if _, ok := rates[r.name]; !ok {
			names = append(names, r.name)
		}
		rates[r.name] = append(rates[r.name], r.rate())
		if raw := raws[r.round]; raw != nil {
			ratios[r.name] = append(ratios[r.name], r.rate()/raw.rate())
		}
		rss[r.name] = max(rss[r.name], r.rssKB)
	}
	for _, name := range names {
		if qs := ratios[name]; len(qs) > 0 {
			q := benchstat.Median(qs)
			fmt.Fprintf(w, "- %s / raw limit of the same round = %.2f, the median of %s (goal ≥ 0.50: %s)\n", name, q, benchstat.Join(qs, "%.2f"), verdict(q >= 0.5))
		}
		if msmtp != nil {
			q := benchstat.Median(rates[name]) / msmtp.rate()
			fmt.Fprintf(w, "- %s (median rate) / msmtp = %.0f× (goal ≥ 50×: %s)\n", name, q, verdict(q >= 50))
		}
		fmt.Fprintf(w, "- %s peak RSS = %.1f MB, the highest of its rounds (goal < 150 MB: %s)\n", name, float64(rss[name])/1024, verdict(rss[name] > 0 && rss[name] < 150*1024))
	}
	fmt.Fprintf(w, "\nmachine: %d CPUs (%s), %s, bench built with %s; message text %d bytes, %d API clients\n",
		runtime.NumCPU(), cpuModel(), kernel(), runtime.Version(), o.size, o.clients)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for l := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return runtime.GOOS
	}
	return runtime.GOOS + " " + strings.TrimSpace(string(b))
}
