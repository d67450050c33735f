package testpeer

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
)

// dovecotBinary is where Debian's dovecot-imapd installs the server.
const dovecotBinary = "/usr/sbin/dovecot"

// dovecotStartTimeout bounds starting Dovecot, stopping it, and waiting for
// kicked processes to exit.
const dovecotStartTimeout = 10 * time.Second

// DovecotOptions shapes a Dovecot peer; a nil *DovecotOptions means the zero
// value.
type DovecotOptions struct {
	// CA issues the server certificate; nil means a new CA.
	CA *CA
	// Config is appended to the generated dovecot.conf, where it wins over
	// what comes before, e.g. "protocol imap {\n  mail_max_userip_connections = 3\n}"
	// (the generated default is 100) or "imap_idle_notify_interval = 5 secs".
	Config string
}

// Dovecot is a real Dovecot (2.3) started by the test from a configuration
// generated under t.TempDir:
//
//   - plain IMAP on PlainAddr (LOGIN allowed in clear text, STARTTLS
//     offered) and implicit TLS on TLSAddr, both on 127.0.0.1 with ports
//     chosen by the kernel; the certificate, for "localhost" and 127.0.0.1,
//     comes from CA;
//   - users in files, one per user, that AddUser and SetPassword write and
//     Dovecot's dict passdb (fs:posix) reads at every login, so a new
//     password holds from the very next login. (A passwd-file would not do:
//     Dovecot 2.3 re-checks it at most once per second and by mtime and size
//     only, so a change in the second of a login goes unseen.) Auth caching
//     is off;
//   - Maildir++ under each user's home, hierarchy separator "/", with Drafts,
//     Sent, Junk and Trash created and subscribed at first login and
//     flagged with their SPECIAL-USE attribute (RFC 6154);
//   - CONDSTORE, QRESYNC, IDLE, MOVE, UIDPLUS and the rest of Dovecot's
//     default capabilities;
//   - no login penalty after failures (Dovecot's default delays every later
//     login from the IP by 2 s and more), though Dovecot still answers a
//     failed login on a 0.5 s timer.
//
// As root, mail is owned by "nobody" (Dovecot refuses uid 0 for mail) and
// Dovecot's own services run as its packaged users; otherwise everything
// runs as the current user. t.Cleanup kills the whole process group and
// waits for every process of it to exit; on failure the test log shows
// Dovecot's log.
type Dovecot struct {
	dir       string // t.TempDir holding the configuration and the homes
	conf      string
	doveadm   string
	plainPort int
	tlsPort   int
	ca        *CA
	mailUID   int
	mailGID   int
	chown     bool // files the test writes must be handed to mailUID

	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd.Wait returns
	log    *dovecotLog

	mu      sync.Mutex
	users   map[string]bool // logins added
	folders map[string]bool // Maildir folders known to exist

	seq atomic.Uint64 // Maildir file name uniqueness
}

// StartDovecot starts Dovecot for the test and waits until both ports
// greet. Without /usr/sbin/dovecot (or dovecot on PATH) the test skips, or
// fails when MAILSYNC_TEST_REQUIRE lists "dovecot".
func StartDovecot(t testing.TB, opts *DovecotOptions) *Dovecot {
	t.Helper()
	if opts == nil {
		opts = &DovecotOptions{}
	}
	bin := dovecotBinary
	if _, err := os.Stat(bin); err != nil {
		p, lookErr := exec.LookPath("dovecot")
		if lookErr != nil {
			Missing(t, "dovecot", fmt.Sprintf("%s not found and no dovecot on PATH (apt-get install dovecot-imapd)", dovecotBinary))
			return nil
		}
		bin = p
	}
	if err := dovecotSupported(); err != nil {
		Missing(t, "dovecot", err.Error())
		return nil
	}
	// Not t.TempDir: a subtest's name may carry '#', which Dovecot's
	// configuration reads as the start of a comment.
	dir, err := os.MkdirTemp("", "mailsync-dovecot-")
	if err != nil {
		t.Fatalf("dovecot: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &Dovecot{
		dir:     dir,
		doveadm: filepath.Join(filepath.Dir(bin), "doveadm"),
		ca:      opts.CA,
		users:   make(map[string]bool),
		folders: make(map[string]bool),
	}
	if d.ca == nil {
		d.ca = NewCA(t)
	}
	if _, err := os.Stat(d.doveadm); err != nil {
		if p, lookErr := exec.LookPath("doveadm"); lookErr == nil {
			d.doveadm = p
		}
	}
	cfg := d.prepare(t, opts)

	var lastErr error
	for attempt := 1; attempt <= 5; attempt++ {
		d.plainPort, d.tlsPort = dovecotFreePorts(t)
		cfg.PlainPort, cfg.TLSPort = d.plainPort, d.tlsPort
		var conf bytes.Buffer
		if err := dovecotConfTemplate.Execute(&conf, cfg); err != nil {
			t.Fatalf("dovecot: render config: %v", err)
		}
		if err := os.WriteFile(d.conf, conf.Bytes(), 0o644); err != nil {
			t.Fatalf("dovecot: write config: %v", err)
		}
		begin := time.Now()
		lastErr = d.start(bin)
		if lastErr == nil {
			t.Logf("dovecot: ready in %v on plain %d, TLS %d (%s)", time.Since(begin).Round(time.Millisecond), d.plainPort, d.tlsPort, d.dir)
			break
		}
		stopErr := d.stop()
		if !errors.Is(lastErr, errDovecotPortInUse) {
			t.Fatalf("dovecot: start: %v (stop: %v)\n%s", lastErr, stopErr, d.log.String())
		}
	}
	if lastErr != nil {
		t.Fatalf("dovecot: start: %v\n%s", lastErr, d.log.String())
	}
	t.Cleanup(func() {
		if err := d.stop(); err != nil {
			t.Errorf("dovecot: stop: %v", err)
		}
		if t.Failed() {
			t.Logf("dovecot log:\n%s", d.log.String())
		}
	})
	return d
}

// errDovecotPortInUse means another process took a port between choosing
// and binding it; StartDovecot then retries with new ports.
var errDovecotPortInUse = errors.New("port already in use")

// start runs Dovecot in the foreground in its own process group and waits
// until it has logged that it is starting up and both ports greet.
func (d *Dovecot) start(bin string) error {
	d.log = newDovecotLog()
	d.exited = make(chan struct{})
	d.cmd = exec.Command(bin, "-F", "-c", d.conf)
	d.cmd.Stdout = d.log
	d.cmd.Stderr = d.log
	d.cmd.SysProcAttr = dovecotSysProcAttr()
	d.cmd.WaitDelay = dovecotStartTimeout
	if err := d.cmd.Start(); err != nil {
		close(d.exited)
		return fmt.Errorf("exec %s: %w", bin, err)
	}
	go func() {
		_ = d.cmd.Wait()
		close(d.exited)
	}()

	deadline := time.Now().Add(dovecotStartTimeout)
	timer := time.NewTimer(dovecotStartTimeout)
	defer timer.Stop()
	select {
	case <-d.log.started:
	case <-d.exited:
		if strings.Contains(d.log.String(), "Address already in use") {
			return errDovecotPortInUse
		}
		return fmt.Errorf("dovecot exited before starting up: %v", d.cmd.ProcessState)
	case <-timer.C:
		return fmt.Errorf("no start-up line in the log after %v", dovecotStartTimeout)
	}
	// The master binds the listeners before it logs the start-up line, so
	// one attempt normally suffices; the bounded retries cover a login
	// process that is still being spawned.
	probes := []struct {
		port int
		tls  *tls.Config
	}{
		{d.plainPort, nil},
		{d.tlsPort, imapVerifyingTLS(d.ca, d.TLSServerName())},
	}
	for _, p := range probes {
		if err := dovecotAwaitGreeting(d.exited, d.addr(p.port), p.tls, deadline); err != nil {
			return err
		}
	}
	return nil
}

// dovecotAwaitGreeting connects to addr until the IMAP greeting arrives,
// backing off between attempts, until deadline or until Dovecot exits.
func dovecotAwaitGreeting(exited <-chan struct{}, addr string, tlsConfig *tls.Config, deadline time.Time) error {
	backoff := 5 * time.Millisecond
	for {
		err := dovecotGreeting(addr, tlsConfig, deadline)
		if err == nil {
			return nil
		}
		if time.Now().Add(backoff).After(deadline) {
			return fmt.Errorf("no greeting from %s: %w", addr, err)
		}
		select {
		case <-exited:
			return fmt.Errorf("dovecot exited while waiting for %s: %w", addr, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// dovecotGreeting reads the greeting once; with tlsConfig the handshake
// must verify the certificate.
func dovecotGreeting(addr string, tlsConfig *tls.Config, deadline time.Time) error {
	dialer := &net.Dialer{Deadline: deadline}
	var (
		conn net.Conn
		err  error
	)
	if tlsConfig != nil {
		conn, err = tls.DialWithDialer(dialer, "tcp", addr, tlsConfig)
	} else {
		conn, err = dialer.Dial("tcp", addr)
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if !strings.HasPrefix(line, "* OK") {
		return fmt.Errorf("greeting %q, want * OK", strings.TrimSpace(line))
	}
	return nil
}

// stop kills Dovecot's process group (its state is disposable, and a
// graceful shutdown takes about a second) and waits for the master and
// every other process of the group to exit.
func (d *Dovecot) stop() error {
	if d.cmd == nil || d.cmd.Process == nil {
		return nil
	}
	pgid := d.cmd.Process.Pid
	dovecotKillGroup(pgid)
	select {
	case <-d.exited:
	case <-time.After(dovecotStartTimeout):
		return fmt.Errorf("dovecot master %d still running %v after SIGKILL", pgid, dovecotStartTimeout)
	}
	return dovecotWaitGroup(pgid, time.Now().Add(dovecotStartTimeout))
}

// dovecotFreePorts asks the kernel for two free loopback ports. Another
// process may take one before Dovecot binds it; StartDovecot retries then.
func dovecotFreePorts(t testing.TB) (plain, tlsPort int) {
	t.Helper()
	var ports [2]int
	var lns [2]net.Listener
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("dovecot: free port: %v", err)
		}
		lns[i] = ln
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return ports[0], ports[1]
}

// Host is the address Dovecot listens on, "127.0.0.1".
func (d *Dovecot) Host() string { return "127.0.0.1" }

// TLSServerName is the name the certificate is issued for, "localhost".
func (d *Dovecot) TLSServerName() string { return "localhost" }

// PlainPort is the cleartext IMAP port (STARTTLS offered, LOGIN allowed).
func (d *Dovecot) PlainPort() int { return d.plainPort }

// TLSPort is the implicit-TLS IMAP port.
func (d *Dovecot) TLSPort() int { return d.tlsPort }

// PlainAddr is Host:PlainPort.
func (d *Dovecot) PlainAddr() string { return d.addr(d.plainPort) }

// TLSAddr is Host:TLSPort.
func (d *Dovecot) TLSAddr() string { return d.addr(d.tlsPort) }

func (d *Dovecot) addr(port int) string { return net.JoinHostPort(d.Host(), strconv.Itoa(port)) }

// CA is the authority that issued Dovecot's certificate.
func (d *Dovecot) CA() *CA { return d.ca }

// Log returns what Dovecot has logged so far.
func (d *Dovecot) Log() string { return d.log.String() }

// AddUser adds a user with an empty Maildir. Logins must be lower case
// (Dovecot lower-cases the name it looks up) and may not contain ':' or '/'.
func (d *Dovecot) AddUser(t testing.TB, login, password string) {
	t.Helper()
	if login == "" || login != strings.ToLower(login) || strings.ContainsAny(login, ":/\n\r\t ") || login == "." || login == ".." {
		t.Fatalf("dovecot: login %q: want a non-empty lower-case name without ':', '/' or spaces", login)
	}
	d.mkdirOwned(t, d.homeDir(login))
	d.setPassword(t, login, password, true)
	d.ensureFolder(t, login, "INBOX")
}

// SetPassword changes an existing user's password. The next login sees it;
// sessions already logged in stay so (Kick them to force a new login).
func (d *Dovecot) SetPassword(t testing.TB, login, password string) {
	t.Helper()
	d.setPassword(t, login, password, false)
}

func (d *Dovecot) setPassword(t testing.TB, login, password string, add bool) {
	t.Helper()
	if password == "" {
		t.Fatalf("dovecot: password for %q: want a non-empty one", login)
	}
	d.mu.Lock()
	exists := d.users[login]
	if add && !exists {
		d.users[login] = true
	}
	d.mu.Unlock()
	switch {
	case add && exists:
		t.Fatalf("dovecot: user %q already exists", login)
	case !add && !exists:
		t.Fatalf("dovecot: no user %q (AddUser first)", login)
	}
	d.writeUser(t, login, password)
}

// writeUser stores a user's password where the dict passdb reads it:
// users/passdb/<login>, JSON, replaced atomically. Dovecot reads the file
// at every login, so a change is seen by the very next one.
func (d *Dovecot) writeUser(t testing.TB, login, password string) {
	t.Helper()
	value, err := json.Marshal(map[string]string{"password": "{PLAIN}" + password})
	if err != nil {
		t.Fatalf("dovecot: user %q: %v", login, err)
	}
	dir := filepath.Join(d.dir, "users", "passdb")
	// Read by Dovecot's auth-worker, which runs as root or as the current
	// user: 0600 from CreateTemp suffices.
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		t.Fatalf("dovecot: user %q: %v", login, err)
	}
	_, err = f.Write(value)
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, login))
	}
	if err != nil {
		_ = os.Remove(f.Name())
		t.Fatalf("dovecot: user %q: %v", login, err)
	}
}

// Dial connects a go-imap v2 client to the TLS port, verifying the
// certificate against CA, without logging in. opts may be nil; a nil
// opts.TLSConfig means the verifying configuration. t.Cleanup closes it.
func (d *Dovecot) Dial(t testing.TB, opts *imapclient.Options) *imapclient.Client {
	t.Helper()
	return imapDial(t, d.TLSAddr(), imapModeTLS, d.ca, d.TLSServerName(), opts)
}

// Client is Dial followed by LOGIN.
func (d *Dovecot) Client(t testing.TB, login, password string) *imapclient.Client {
	t.Helper()
	c := d.Dial(t, nil)
	if err := c.Login(login, password).Wait(); err != nil {
		t.Fatalf("dovecot: login %q at %s: %v", login, d.TLSAddr(), err)
	}
	return c
}

// Doveadm runs doveadm against this Dovecot, e.g. Doveadm(t, "mailbox",
// "delete", "-u", login, "Projects"), and returns its standard output; a
// failure fails the test.
func (d *Dovecot) Doveadm(t testing.TB, args ...string) string {
	t.Helper()
	out, err := d.doveadmRun(args...)
	if err != nil {
		t.Fatalf("dovecot: %v", err)
	}
	return out
}

func (d *Dovecot) doveadmRun(args ...string) (string, error) {
	cmd := exec.Command(d.doveadm, append([]string{"-c", d.conf}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("doveadm %s: %w: %s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// Kick cuts every IMAP connection of login, as an administrator or a crash
// would: doveadm kick sends their imap processes SIGTERM (they answer "* BYE
// Server shutting down."), and Kick returns once those processes have
// exited. It returns how many connections it cut.
func (d *Dovecot) Kick(t testing.TB, login string) int {
	t.Helper()
	// "doveadm who -1" prints one line per connection: user, proto, pid, ip.
	out := d.Doveadm(t, "who", "-1", login)
	var pids []int
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != login || f[1] != "imap" {
			continue
		}
		pid, err := strconv.Atoi(f[2])
		if err != nil {
			t.Fatalf("dovecot: doveadm who: pid %q in %q", f[2], line)
		}
		pids = append(pids, pid)
	}
	if len(pids) == 0 {
		return 0
	}
	if out, err := d.doveadmRun("kick", login); err != nil && !strings.Contains(out, "no users kicked") {
		t.Fatalf("dovecot: %v", err)
	}
	if err := dovecotWaitPIDs(pids, time.Now().Add(dovecotStartTimeout)); err != nil {
		t.Fatalf("dovecot: kick %q: %v", login, err)
	}
	return len(pids)
}

// homeDir is the user's home as the userdb names it.
func (d *Dovecot) homeDir(login string) string { return filepath.Join(d.dir, "home", login) }

// Maildir is the user's Maildir (INBOX; other folders are ".Name"
// directories inside it).
func (d *Dovecot) Maildir(login string) string { return filepath.Join(d.homeDir(login), "Maildir") }

// mkdirOwned creates dir (its parent must exist) owned by the mail user.
func (d *Dovecot) mkdirOwned(t testing.TB, dir string) {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		t.Fatalf("dovecot: %v", err)
	}
	d.own(t, dir)
}

// own hands path to the mail user when the test runs as another user.
func (d *Dovecot) own(t testing.TB, path string) {
	t.Helper()
	if !d.chown {
		return
	}
	if err := os.Chown(path, d.mailUID, d.mailGID); err != nil {
		t.Fatalf("dovecot: %v", err)
	}
}

// dovecotLog collects Dovecot's log (log_path is its standard error) and
// signals the master's start-up line.
type dovecotLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	started chan struct{}
	seen    bool
}

func newDovecotLog() *dovecotLog { return &dovecotLog{started: make(chan struct{})} }

func (l *dovecotLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if !l.seen && bytes.Contains(l.buf.Bytes(), []byte("master: Info: Dovecot v")) && bytes.Contains(l.buf.Bytes(), []byte(" starting up")) {
		l.seen = true
		close(l.started)
	}
	return len(p), nil
}

func (l *dovecotLog) String() string {
	if l == nil {
		return ""
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
