//go:build bench

// Package syncbench measures the IMAP sync (package imapsync) against
// mbsync (isync) on one generated mailbox in a local Dovecot, in the same
// run, over plain IMAP and TLS: the initial sync (messages/s, MB/s) and a
// resync with nothing changed, with each side's peak RSS. It runs only when
// MAILSYNC_BENCH=1 and the build tag bench (see run.sh and docs/benchmarks.md):
//
//	MAILSYNC_BENCH=1 go test ./bench/sync -run TestSyncBenchmark -v -timeout 60m
//
// mailsync runs in a child process (this test binary again, in
// TestSyncChild), so that its peak RSS is its own; it syncs through
// Engine.SyncOnce, the code path of the engine's workers.
package syncbench

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/benchstat"
	"github.com/mailsync/mailsync/internal/netguard"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/mailbox"
	"github.com/mailsync/mailsync/outgoing"
	imapsync "github.com/mailsync/mailsync/sync"
)

const (
	login    = "bench@example.test"
	password = "Bench-Pa55word"
)

// sizeOf draws a message size from a mix shaped like a business mailbox:
// mostly short text, some HTML newsletters, some office attachments and a
// few large ones.
func sizeOf(r *rand.Rand) int {
	switch p := r.IntN(100); {
	case p < 55:
		return 1000 + r.IntN(7000) // 1–8 KB text
	case p < 85:
		return 8000 + r.IntN(32000) // 8–40 KB HTML
	case p < 97:
		return 40000 + r.IntN(260000) // 40–300 KB attachment
	default:
		return 300000 + r.IntN(2700000) // 0.3–3 MB attachment
	}
}

// message builds message i of about size bytes: text and HTML are
// compressible, attachments (base64 of random bytes) are not.
func message(r *rand.Rand, i, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Date: %s\r\nFrom: \"Sender %d\" <s%d@example.org>\r\nTo: %s\r\nSubject: Message %d about the quarterly numbers\r\n",
		time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i)*7*time.Minute).Format(time.RFC1123Z), i%97, i%97, login, i)
	fmt.Fprintf(&b, "Message-ID: <bench-%d@example.org>\r\nMIME-Version: 1.0\r\n", i)
	text := func(n int) {
		words := []string{"the", "report", "for", "march", "shows", "revenue", "growth", "of", "twelve", "percent", "and", "costs", "fell", "slightly", "please", "review"}
		line := 0
		for written := 0; written < n; {
			w := words[r.IntN(len(words))]
			b.WriteString(w)
			written += len(w) + 1
			if line += len(w) + 1; line > 70 {
				b.WriteString("\r\n")
				line = 0
			} else {
				b.WriteByte(' ')
			}
		}
		b.WriteString("\r\n")
	}
	switch {
	case size < 8000:
		b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n")
		text(size - b.Len())
	case size < 40000:
		b.WriteString("Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>")
		text(size - b.Len())
		b.WriteString("</p></body></html>\r\n")
	default:
		b.WriteString("Content-Type: multipart/mixed; boundary=\"bb\"\r\n\r\n--bb\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
		text(1500)
		b.WriteString("--bb\r\nContent-Type: application/pdf; name=\"doc.pdf\"\r\nContent-Disposition: attachment; filename=\"doc.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
		raw := make([]byte, 57)
		for b.Len() < size {
			for k := range raw {
				raw[k] = byte(r.Uint32())
			}
			b.WriteString(b64(raw))
			b.WriteString("\r\n")
		}
		b.WriteString("--bb--\r\n")
	}
	return b.Bytes()
}

func b64(p []byte) string {
	const enc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	out := make([]byte, 0, len(p)/3*4+4)
	for i := 0; i+2 < len(p); i += 3 {
		n := uint32(p[i])<<16 | uint32(p[i+1])<<8 | uint32(p[i+2])
		out = append(out, enc[n>>18&63], enc[n>>12&63], enc[n>>6&63], enc[n&63])
	}
	return string(out)
}

// result is one measured run.
type result struct {
	Round               int
	Tool, DB, Transport string
	Messages            int
	Bytes               int64
	Initial             time.Duration
	Resync              time.Duration
	PeakRSS             int64 // bytes
}

func (r result) rate() float64 { return float64(r.Messages) / r.Initial.Seconds() }
func (r result) mbps() float64 { return float64(r.Bytes) / 1e6 / r.Initial.Seconds() }

// childOutput is what TestSyncChild prints on its last line.
type childOutput struct {
	Messages        int
	Bytes           int64
	Initial, Resync time.Duration
	// BackendCPU is the CPU the PostgreSQL backends of the child's own
	// connections used by the end of the initial sync (0 on SQLite).
	BackendCPU time.Duration
}

func TestSyncBenchmark(t *testing.T) {
	if os.Getenv("MAILSYNC_BENCH") != "1" {
		t.Skip("set MAILSYNC_BENCH=1 to run the sync benchmark (bench/sync/run.sh)")
	}
	n := 20000
	if v := os.Getenv("MAILSYNC_BENCH_N"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	if _, err := exec.LookPath("mbsync"); err != nil {
		t.Fatal("mbsync is missing: apt-get install isync")
	}
	ca := testpeer.NewCA(t)
	dv := testpeer.StartDovecot(t, &testpeer.DovecotOptions{CA: ca})
	dv.AddUser(t, login, password)
	r := rand.New(rand.NewPCG(1, 2))
	var total int64
	genStart := time.Now()
	for i := range n {
		m := message(r, i, sizeOf(r))
		total += int64(len(m))
		dv.Deliver(t, login, "INBOX", m)
	}
	t.Logf("generated %d messages, %.1f MB, in %v", n, float64(total)/1e6, time.Since(genStart).Round(time.Millisecond))
	caFile := ca.WriteFile(t)

	// Warm-up: Dovecot assigns UIDs and fills its caches, and the page
	// cache holds the mail, before anything is timed.
	mbsync(t, dv.PlainPort(), false, caFile, t.TempDir())

	// mbsync's time swings from run to run with the machine's fsync latency
	// (it syncs every message file; 5.9 s and 11.5 s for the same 5,000
	// messages twenty minutes apart here), so the comparison is repeated:
	// each round times mbsync and mailsync back to back on each transport,
	// the first in turn, and the ratios are taken within a round.
	rounds := 1
	if v := os.Getenv("MAILSYNC_BENCH_ROUNDS"); v != "" {
		if rounds, _ = strconv.Atoi(v); rounds < 1 {
			t.Fatalf("MAILSYNC_BENCH_ROUNDS=%q: want a number ≥ 1", v)
		}
	}
	var results []result
	for round := 1; round <= rounds; round++ {
		for _, tlsOn := range []bool{false, true} {
			transport, port := "plain", dv.PlainPort()
			if tlsOn {
				transport, port = "TLS", dv.TLSPort()
			}
			runMbsync := func() {
				res := mbsync(t, port, tlsOn, caFile, t.TempDir())
				res.Round, res.Transport, res.Messages, res.Bytes = round, transport, n, total
				results = append(results, res)
			}
			if round%2 == 1 {
				runMbsync()
			}
			for _, d := range []store.Dialect{store.SQLite, store.Postgres} {
				if d == store.Postgres && os.Getenv(testpeer.PostgresEnv) == "" {
					continue
				}
				res := mailsyncChild(t, d, port, tlsOn, caFile)
				res.Round, res.Transport = round, transport
				if res.Messages != n {
					t.Errorf("mailsync (%s, %s) stored %d messages, want %d", d, transport, res.Messages, n)
				}
				results = append(results, res)
			}
			if round%2 == 0 {
				runMbsync()
			}
		}
	}
	report(t, results)
}

// mbsync runs mbsync twice into a fresh Maildir: the initial sync, then one
// with nothing changed.
func mbsync(t *testing.T, port int, tlsOn bool, caFile, dir string) result {
	t.Helper()
	ssl := "None"
	if tlsOn {
		ssl = "IMAPS"
	}
	conf := fmt.Sprintf(`IMAPAccount bench
Host localhost
Port %d
User %s
Pass %s
SSLType %s
CertificateFile %s
AuthMechs LOGIN

IMAPStore remote
Account bench

MaildirStore local
Path %s/
Inbox %s/INBOX
SubFolders Verbatim

Channel bench
Far :remote:
Near :local:
Patterns INBOX
Create Near
Sync Pull
SyncState *
`, port, login, password, ssl, caFile, dir, dir)
	path := filepath.Join(dir, "mbsyncrc")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func() (time.Duration, int64) {
		cmd := exec.Command("mbsync", "-c", path, "-q", "bench")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		peers := peerCPU()
		if err := cmd.Run(); err != nil {
			t.Fatalf("mbsync: %v\n%s", err, out.String())
		}
		t.Logf("mbsync: %v, CPU user %v sys %v; %s", time.Since(start).Round(time.Millisecond),
			cmd.ProcessState.UserTime().Round(time.Millisecond), cmd.ProcessState.SystemTime().Round(time.Millisecond), peerCPU().since(peers))
		return time.Since(start), cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss * 1024
	}
	initial, rss1 := run()
	resync, rss2 := run()
	files, _ := os.ReadDir(filepath.Join(dir, "INBOX", "cur"))
	newFiles, _ := os.ReadDir(filepath.Join(dir, "INBOX", "new"))
	t.Logf("mbsync: %d messages in the Maildir", len(files)+len(newFiles))
	return result{Tool: "mbsync", DB: "Maildir", Initial: initial, Resync: resync, PeakRSS: max(rss1, rss2)}
}

// mailsyncChild runs TestSyncChild in a child process and reads its result.
func mailsyncChild(t *testing.T, d store.Dialect, port int, tlsOn bool, caFile string) result {
	t.Helper()
	sec := "none"
	if tlsOn {
		sec = "ssl"
	}
	args := []string{"-test.run=^TestSyncChild$", "-test.v"}
	if dir := os.Getenv("MAILSYNC_BENCH_PROFILE"); dir != "" {
		args = append(args, "-test.cpuprofile="+filepath.Join(dir, fmt.Sprintf("cpu-%s-%s.pprof", d, sec)),
			"-test.trace="+filepath.Join(dir, fmt.Sprintf("trace-%s-%s.out", d, sec)))
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "MAILSYNC_BENCH_CHILD=1", "MAILSYNC_BENCH_DIALECT="+string(d),
		"MAILSYNC_BENCH_PORT="+strconv.Itoa(port), "MAILSYNC_BENCH_SECURITY="+sec, "MAILSYNC_BENCH_CA="+caFile,
		"TMPDIR="+t.TempDir())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	peers := peerCPU()
	if err := cmd.Run(); err != nil {
		t.Fatalf("mailsync child: %v\n%s", err, out.String())
	}
	peersUsed := peerCPU().since(peers)
	var co childOutput
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "TRACE") {
			t.Log(line)
		}
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "RESULT "); ok {
			if err := json.Unmarshal([]byte(rest), &co); err != nil {
				t.Fatal(err)
			}
		}
	}
	if co.Messages == 0 {
		t.Fatalf("no result from the child:\n%s", out.String())
	}
	t.Logf("mailsync %s %s: initial %v, CPU user %v sys %v (both syncs), its PostgreSQL backends %v; %s", d, sec, co.Initial.Round(time.Millisecond),
		cmd.ProcessState.UserTime().Round(time.Millisecond), cmd.ProcessState.SystemTime().Round(time.Millisecond),
		co.BackendCPU.Round(time.Millisecond), peersUsed)
	return result{Tool: "mailsync", DB: string(d), Messages: co.Messages, Bytes: co.Bytes, Initial: co.Initial, Resync: co.Resync,
		PeakRSS: cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss * 1024}
}

// TestSyncChild is mailsync's side, run by mailsyncChild: a fresh database,
// the mailbox connected, SyncOnce twice.
func TestSyncChild(t *testing.T) {
	if os.Getenv("MAILSYNC_BENCH_CHILD") != "1" {
		t.Skip("run by TestSyncBenchmark")
	}
	d := store.Dialect(os.Getenv("MAILSYNC_BENCH_DIALECT"))
	port, _ := strconv.Atoi(os.Getenv("MAILSYNC_BENCH_PORT"))
	pem, err := os.ReadFile(os.Getenv("MAILSYNC_BENCH_CA"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	db := storetest.Open(t, d)
	if err := db.Gorm.Exec("INSERT INTO users (id, email, name, admin, created_at) VALUES (1, 'owner@example.com', '', FALSE, ?)", time.Now().UTC()).Error; err != nil {
		t.Fatal(err)
	}
	keyText, _ := secret.GenerateKey()
	key, _ := secret.ParseKey(keyText)
	box := secret.NewBox(key)
	dialer := &netguard.Dialer{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	out := outgoing.NewService(outgoing.Deps{DB: db, Box: box, Network: &outgoing.Network{Dialer: dialer, RootCAs: roots, HelloName: "bench"}},
		outgoing.Config{})
	mbs := mailbox.NewService(mailbox.Deps{DB: db, Box: box, Outgoing: out, IMAP: &mailbox.IMAPNetwork{Dialer: dialer, RootCAs: roots}},
		mailbox.Config{CheckTimeout: 30 * time.Second})
	eng := imapsync.New(imapsync.Deps{DB: db, Mailboxes: mbs}, imapsync.Config{})
	ctx := context.Background()
	mb, res, err := mbs.Connect(ctx, outgoing.Caller{UserID: 1, Lang: "en"}, mailbox.ConnectInput{
		Email: login, Password: secret.Secret(password),
		IMAP: &mailbox.IMAPEndpoint{Host: "localhost", Port: port, Security: outgoing.Security(os.Getenv("MAILSYNC_BENCH_SECURITY")), Login: login},
	})
	if err != nil {
		t.Fatalf("connect: %v %+v", err, res.Report)
	}
	if _, err := mbs.SetFolders(ctx, outgoing.Caller{UserID: 1}, mb.ID, []string{"INBOX"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := eng.SyncOnce(ctx, mb.ID); err != nil {
		t.Fatal(err)
	}
	initial := time.Since(start)
	var backendCPU time.Duration
	if d == store.Postgres {
		backendCPU = backendsCPU(t, db)
	}
	st := eng.Stats()
	start = time.Now()
	if _, err := eng.SyncOnce(ctx, mb.ID); err != nil {
		t.Fatal(err)
	}
	resync := time.Since(start)
	if d := eng.Stats(); d.BodyFetches != st.BodyFetches || d.RowWrites != st.RowWrites {
		t.Errorf("the no-change resync fetched %d bodies and wrote %d rows", d.BodyFetches-st.BodyFetches, d.RowWrites-st.RowWrites)
	}
	b, _ := json.Marshal(childOutput{Messages: int(st.Messages), Bytes: st.Bytes, Initial: initial, Resync: resync, BackendCPU: backendCPU})
	fmt.Printf("RESULT %s\n", b)
}

// backendsCPU is the CPU time used so far by the PostgreSQL backends
// connected to db's database (the child's pool: it keeps its connections
// open), read from /proc on this machine.
func backendsCPU(t *testing.T, db *store.DB) time.Duration {
	t.Helper()
	var pids []int
	if err := db.Gorm.Raw("SELECT pid FROM pg_stat_activity WHERE datname = current_database()").Scan(&pids).Error; err != nil {
		t.Fatal(err)
	}
	var ticks float64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		st := string(b)
		f := strings.Fields(st[strings.LastIndexByte(st, ')')+2:])
		for _, i := range []int{11, 12} { // utime, stime
			v, _ := strconv.ParseFloat(f[i], 64)
			ticks += v
		}
	}
	return time.Duration(ticks * float64(time.Second) / 100)
}

// cpuUse is CPU time consumed so far, in clock ticks (USER_HZ, 100 on
// Linux): by Dovecot's processes, by PostgreSQL's, and by the whole machine
// (busy time of /proc/stat: everyone's, this benchmark's and others').
type cpuUse struct{ dovecot, postgres, machine float64 }

// peerCPU reads the CPU used by the peers of a run from /proc: each
// process's own and its reaped children's time, summed by command name.
func peerCPU() cpuUse {
	var u cpuUse
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		st := string(b)
		open, end := strings.IndexByte(st, '('), strings.LastIndexByte(st, ')')
		if open < 0 || end < open || end+2 > len(st) {
			continue
		}
		f := strings.Fields(st[end+2:])
		if len(f) < 15 {
			continue
		}
		var ticks float64
		for _, i := range []int{11, 12, 13, 14} { // utime, stime, cutime, cstime
			v, _ := strconv.ParseFloat(f[i], 64)
			ticks += v
		}
		switch comm := st[open+1 : end]; {
		case strings.HasPrefix(comm, "postgres"):
			u.postgres += ticks
		case comm == "dovecot", comm == "imap", comm == "imap-login", comm == "auth", comm == "anvil", comm == "log", comm == "config":
			u.dovecot += ticks
		}
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		if line, _, _ := strings.Cut(string(b), "\n"); strings.HasPrefix(line, "cpu ") {
			f := strings.Fields(line)[1:]
			for i, x := range f {
				if i == 3 || i == 4 { // idle, iowait
					continue
				}
				v, _ := strconv.ParseFloat(x, 64)
				u.machine += v
			}
		}
	}
	return u
}

// since formats the CPU used since before.
func (u cpuUse) since(before cpuUse) string {
	return fmt.Sprintf("CPU of Dovecot %.2fs, PostgreSQL %.2fs, the whole machine %.2fs",
		(u.dovecot-before.dovecot)/100, (u.postgres-before.postgres)/100, (u.machine-before.machine)/100)
}

func report(t *testing.T, results []result) {
	var b strings.Builder
	b.WriteString("| round | tool | store | transport | messages | MB | initial sync | messages/s | MB/s | no-change resync | peak RSS |\n")
	b.WriteString("| ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %d | %.0f | %.1f s | %.0f | %.1f | %.3f s | %.0f MB |\n",
			r.Round, r.Tool, r.DB, r.Transport, r.Messages, float64(r.Bytes)/1e6, r.Initial.Seconds(), r.rate(), r.mbps(),
			r.Resync.Seconds(), float64(r.PeakRSS)/(1<<20))
	}
	b.WriteString("\nRatios against mbsync on the same transport in the same round, and their median over the rounds " +
		"(goal: initial rate ≥ 1.5×, resync time ≤ 2×, peak RSS < 250 MB):\n\n")
	type key struct{ db, transport string }
	var keys []key
	rates, resyncs := map[key][]float64{}, map[key][]float64{}
	rss := map[key]int64{}
	for _, r := range results {
		if r.Tool != "mailsync" {
			continue
		}
		for _, m := range results {
			if m.Tool == "mbsync" && m.Transport == r.Transport && m.Round == r.Round {
				k := key{r.DB, r.Transport}
				if _, ok := rates[k]; !ok {
					keys = append(keys, k)
				}
				rates[k] = append(rates[k], r.rate()/m.rate())
				resyncs[k] = append(resyncs[k], r.Resync.Seconds()/m.Resync.Seconds())
				rss[k] = max(rss[k], r.PeakRSS)
			}
		}
	}
	for _, k := range keys {
		fmt.Fprintf(&b, "- mailsync %s %s: initial rate %.2f× mbsync (rounds: %s), resync time %.2f× mbsync (rounds: %s), peak RSS %.0f MB\n",
			k.db, k.transport, benchstat.Median(rates[k]), benchstat.Join(rates[k], "%.2f×"), benchstat.Median(resyncs[k]), benchstat.Join(resyncs[k], "%.2f×"), float64(rss[k])/(1<<20))
	}
	fmt.Println(b.String())
	if out := os.Getenv("MAILSYNC_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}
