// Command submission measures how fast sites can hand mail to mailsync, in
// one run and into the same "mailsync serve" (SQLite, a child process):
//
//   - smtp: n messages over one SMTP submission connection (STARTTLS, AUTH
//     PLAIN with an API token), one transaction after another, as a
//     framework's SMTP backend or a queue worker sends;
//   - msmtp: one msmtp process per message into the same submission port,
//     with the same STARTTLS and AUTH, as PHP's sendmail_path runs it;
//   - sendmail: one "mailsync sendmail -t -i" process per message (the HTTP
//     route), the drop-in for sendmail_path.
//
// Each is timed from the first message until every one was accepted (250
// or exit 0), and again until a local SMTP sink (clear text, no AUTH) had
// them all from the outbox workers. It prints a Markdown table and the
// machine. See run.sh and docs/benchmarks.md.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

const (
	sender    = "site@example.com"
	recipient = "someone@example.org"
)

var (
	listenRE     = regexp.MustCompile(`listening on (http://\S+)`)
	tokenRE      = regexp.MustCompile(`^\s*(mst_\S+)`)
	submissionRE = regexp.MustCompile(`SMTP submission listening on (\S+)`)
)

type options struct {
	n, msmtpN, size int
	mailsync, msmtp string
	work            string
}

type result struct {
	name                string
	n                   int
	accepted, delivered time.Duration
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 2000, "messages per path")
	flag.IntVar(&o.msmtpN, "msmtp-n", 0, "messages for the one-process-per-message paths (default -n)")
	flag.IntVar(&o.size, "size", 1024, "approximate body size in bytes")
	flag.StringVar(&o.mailsync, "mailsync", "", "the mailsync binary (required)")
	flag.StringVar(&o.msmtp, "msmtp", "msmtp", "the msmtp binary")
	flag.Parse()
	if o.msmtpN == 0 {
		o.msmtpN = o.n
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.mailsync == "" {
		return errors.New("-mailsync is required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	var err error
	if o.work, err = os.MkdirTemp("", "mailsync-bench-submission"); err != nil {
		return err
	}
	defer os.RemoveAll(o.work)
	caFile, certFile, keyFile, err := writeCerts(o.work)
	if err != nil {
		return err
	}
	sk, err := startSink()
	if err != nil {
		return err
	}
	defer sk.close()

	svc, err := startService(ctx, o, certFile, keyFile)
	if err != nil {
		return err
	}
	defer svc.stop()
	acct, _ := json.Marshal(map[string]any{
		"email": sender, "sender_name": "Bench Site", "host": "127.0.0.1", "port": sk.port(),
		"security": "none", "auth": "none",
	})
	if code, out, err := svc.post(ctx, "/api/v1/smtp-accounts", acct); err != nil || code != http.StatusCreated {
		return fmt.Errorf("create the account: %d %s %v", code, out, err)
	}
	body := strings.Repeat("The site's message body, about one line long of text.\n", max(1, o.size/55))
	msg := func(path string, i int) string {
		return fmt.Sprintf("From: %s\nTo: %s\nSubject: bench %s %d\n\n%s", sender, recipient, path, i, body)
	}

	var rs []result
	total := 0
	measure := func(name string, n int, submit func() error) error {
		start := time.Now()
		if err := submit(); err != nil {
			return fmt.Errorf("%s: %w (log: %s)", name, err, svc.logPath)
		}
		accepted := time.Since(start)
		total += n
		if err := sk.wait(ctx, total); err != nil {
			return fmt.Errorf("%s: %w (log: %s)", name, err, svc.logPath)
		}
		rs = append(rs, result{name: name, n: n, accepted: accepted, delivered: time.Since(start)})
		return nil
	}

	if err := measure("SMTP submission, one connection (STARTTLS, AUTH PLAIN)", o.n, func() error {
		return sendOneConnection(svc.smtpAddr, caFile, svc.token, o.n, func(i int) string { return msg("smtp", i) })
	}); err != nil {
		return err
	}
	msmtpConf := filepath.Join(o.work, "msmtprc")
	host, port, _ := net.SplitHostPort(svc.smtpAddr)
	conf := fmt.Sprintf("defaults\nlogfile -\naccount mailsync\nhost %s\nport %s\ntls on\ntls_starttls on\ntls_trust_file %s\n"+
		"tls_host_override localhost\nauth plain\nuser %s\npassword %s\nfrom %s\naccount default : mailsync\n",
		host, port, caFile, sender, svc.token, sender)
	if err := os.WriteFile(msmtpConf, []byte(conf), 0o600); err != nil {
		return err
	}
	if err := measure("msmtp, one process per message, into the submission port", o.msmtpN, func() error {
		return perProcess(ctx, o.msmtpN, func(i int) *exec.Cmd {
			c := exec.CommandContext(ctx, o.msmtp, "-C", msmtpConf, "-t")
			c.Stdin = strings.NewReader(msg("msmtp", i))
			return c
		})
	}); err != nil {
		return err
	}
	if err := measure("mailsync sendmail -t -i, one process per message (HTTP)", o.msmtpN, func() error {
		return perProcess(ctx, o.msmtpN, func(i int) *exec.Cmd {
			c := exec.CommandContext(ctx, o.mailsync, "sendmail", "-t", "-i")
			c.Env = append(os.Environ(), "MAILSYNC_URL="+svc.url, "MAILSYNC_TOKEN="+svc.token)
			c.Stdin = strings.NewReader(msg("sendmail", i))
			return c
		})
	}); err != nil {
		return err
	}
	if got := sk.count(); got != total {
		return fmt.Errorf("the sink got %d messages, want %d", got, total)
	}
	report(os.Stdout, o, rs)
	return nil
}

// sendOneConnection sends n messages over one authenticated connection.
func sendOneConnection(addr, caFile, token string, n int, msg func(int) string) error {
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool.AppendCertsFromPEM(caPEM)
	c, err := smtp.DialStartTLS(addr, &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", sender, token)); err != nil {
		return err
	}
	for i := range n {
		if err := c.Mail(sender, nil); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		if err := c.Rcpt(recipient, nil); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		w, err := c.Data()
		if err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		if _, err := io.WriteString(w, msg(i)); err != nil {
			return err
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
	}
	return c.Quit()
}

// perProcess runs one process per message, one after another.
func perProcess(ctx context.Context, n int, cmd func(int) *exec.Cmd) error {
	for i := range n {
		c := cmd(i)
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("message %d: %v: %s", i, err, out)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

type service struct {
	cmd      *exec.Cmd
	url      string
	token    string
	smtpAddr string
	logPath  string
	exited   chan struct{}
	once     sync.Once
}

func startService(ctx context.Context, o options, certFile, keyFile string) (*service, error) {
	s := &service{logPath: filepath.Join(o.work, "serve.log"), exited: make(chan struct{})}
	logFile, err := os.Create(s.logPath)
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(o.mailsync, "serve", "-listen", "127.0.0.1:0")
	s.cmd.Env = append(os.Environ(),
		"MAILSYNC_DATA_DIR="+filepath.Join(o.work, "data"),
		"MAILSYNC_ALLOW_HOSTS=127.0.0.0/8",
		"MAILSYNC_LOG_LEVEL=warn",
		"MAILSYNC_SUBMISSION_LISTEN=127.0.0.1:0",
		"MAILSYNC_SUBMISSION_TLS_CERT="+certFile,
		"MAILSYNC_SUBMISSION_TLS_KEY="+keyFile,
	)
	s.cmd.Stderr = logFile
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
		_ = s.cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	timeout := time.After(30 * time.Second)
	for s.url == "" || s.token == "" {
		select {
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-timeout:
			s.stop()
			return nil, fmt.Errorf("serve printed no URL and token within 30 s (log: %s)", s.logPath)
		case l, ok := <-lines:
			if !ok {
				return nil, fmt.Errorf("serve exited before printing its URL and token (log: %s)", s.logPath)
			}
			if m := submissionRE.FindStringSubmatch(l); m != nil {
				s.smtpAddr = m[1]
			}
			if m := listenRE.FindStringSubmatch(l); m != nil {
				s.url = m[1]
			}
			if m := tokenRE.FindStringSubmatch(l); m != nil {
				s.token = m[1]
			}
		}
	}
	if s.smtpAddr == "" {
		s.stop()
		return nil, errors.New("serve printed no \"SMTP submission listening on\" line: the submission server is not wired into serve")
	}
	return s, nil
}

func (s *service) post(ctx context.Context, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out, nil
}

func (s *service) stop() {
	s.once.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	})
}

// sink is the upstream SMTP server: clear text, no AUTH, counts messages.
type sink struct {
	srv *smtp.Server
	ln  net.Listener
	mu  sync.Mutex
	n   int
	ch  chan struct{} // closed and replaced on every message
}

func startSink() (*sink, error) {
	s := &sink{ch: make(chan struct{})}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return sinkSession{s}, nil }))
	s.srv.Domain = "sink.test"
	s.srv.ErrorLog = nopLogger{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.ln = ln
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

func (s *sink) port() int { return s.ln.Addr().(*net.TCPAddr).Port }
func (s *sink) close()    { _ = s.srv.Close() }

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *sink) wait(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		have, ch := s.n, s.ch
		s.mu.Unlock()
		if have >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the sink has %d of %d messages: %w", have, n, ctx.Err())
		case <-ch:
		}
	}
}

type sinkSession struct{ s *sink }

func (sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (sinkSession) Reset()                               {}
func (sinkSession) Logout() error                        { return nil }

func (ss sinkSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	ss.s.mu.Lock()
	ss.s.n++
	close(ss.s.ch)
	ss.s.ch = make(chan struct{})
	ss.s.mu.Unlock()
	return nil
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
func (nopLogger) Println(...any)        {}

// writeCerts makes a CA and a certificate for localhost and 127.0.0.1, for
// the submission port's STARTTLS.
func writeCerts(dir string) (caFile, certFile, keyFile string, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return
	}
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for path, block := range map[string]*pem.Block{
		caFile: {Type: "CERTIFICATE", Bytes: caDER}, certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err = os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			return
		}
	}
	return
}

func report(w io.Writer, o options, rs []result) {
	fmt.Fprintf(w, "| path | messages | all accepted after | accepted msg/s | all at the upstream after | end to end msg/s |\n")
	fmt.Fprintf(w, "| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rs {
		fmt.Fprintf(w, "| %s | %d | %.2f s | %.0f | %.2f s | %.0f |\n", r.name, r.n, r.accepted.Seconds(),
			float64(r.n)/r.accepted.Seconds(), r.delivered.Seconds(), float64(r.n)/r.delivered.Seconds())
	}
	if len(rs) >= 2 {
		fmt.Fprintf(w, "\nOne SMTP connection accepts %.0f× as many messages per second as msmtp, one process per message.\n",
			(float64(rs[0].n)/rs[0].accepted.Seconds())/(float64(rs[1].n)/rs[1].accepted.Seconds()))
	}
	fmt.Fprintf(w, "\nbody %d bytes; SQLite; %s, %s/%s, %d CPUs (%s)\n", o.size, runtime.Version(), runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), cpuModel())
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
