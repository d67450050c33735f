package netguard

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingListener listens on 127.0.0.1 and counts the connections it
// accepts. It writes one byte to each so that a client can wait until its
// connection has been accepted.
type countingListener struct {
	ln       net.Listener
	port     uint16
	accepted atomic.Int64
	done     chan struct{}
}

func newCountingListener(t *testing.T) *countingListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	l := &countingListener{ln: ln, port: uint16(ln.Addr().(*net.TCPAddr).Port), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed
			}
			l.accepted.Add(1)
			_, _ = c.Write([]byte{'!'})
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { l.close() })
	return l
}

// close stops the listener, waits for the accept loop to return and reports
// how many connections were accepted. It may be called more than once.
func (l *countingListener) close() int {
	_ = l.ln.Close()
	<-l.done
	return int(l.accepted.Load())
}

func (l *countingListener) hostPort(host string) string {
	return net.JoinHostPort(host, strconv.Itoa(int(l.port)))
}

// awaitAccepted waits for the listener's byte on conn, i.e. until the
// listener has accepted it, then closes conn. The accept queue is FIFO, so
// every connection made before conn has been accepted (and counted) too.
func awaitAccepted(t *testing.T, conn net.Conn) {
	t.Helper()
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // a bound on failure, not synchronisation
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil {
		t.Fatalf("read the listener's greeting: %v", err)
	}
}

// wantBlocked fails unless the dial was refused with ErrBlocked.
func wantBlocked(t *testing.T, what string, conn net.Conn, err error) {
	t.Helper()
	if err == nil {
		conn.Close()
		t.Errorf("%s connected, want a refusal", what)
		return
	}
	if !errors.Is(err, ErrBlocked) {
		t.Errorf("%s error = %v, want errors.Is(err, ErrBlocked)", what, err)
	}
	if !strings.Contains(err.Error(), "an admin can allow it with MAILSYNC_ALLOW_HOSTS") {
		t.Errorf("%s error = %q, want the MAILSYNC_ALLOW_HOSTS hint", what, err)
	}
}

// resolverFunc adapts a function to Resolver.
type resolverFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

func (f resolverFunc) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return f(ctx, network, host)
}

// staticResolver answers from a table and reports other names as not found.
func staticResolver(answers map[string][]string) Resolver {
	return resolverFunc(func(_ context.Context, _, host string) ([]netip.Addr, error) {
		list, ok := answers[host]
		if !ok {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		var addrs []netip.Addr
		for _, s := range list {
			addrs = append(addrs, netip.MustParseAddr(s))
		}
		return addrs, nil
	})
}

// noDNS fails the test if a lookup is attempted.
func noDNS(t *testing.T) Resolver {
	return resolverFunc(func(_ context.Context, network, host string) ([]netip.Addr, error) {
		t.Errorf("unexpected lookup of %s %q", network, host)
		return nil, errors.New("no DNS in this test")
	})
}

// TestDialRefusedNeverConnects dials every refused address, and names that
// resolve to loopback, at a listener on 127.0.0.1: every dial must be refused
// and the listener must see no connection. Then, with 127.0.0.0/8 allowed,
// one dial makes exactly one connection.
func TestDialRefusedNeverConnects(t *testing.T) {
	l := newCountingListener(t)
	ctx := t.Context()

	d := &Dialer{Timeout: 5 * time.Second, Resolver: noDNS(t)}
	for _, tt := range refusedAddrs {
		for _, network := range []string{"tcp", "tcp4", "tcp6"} {
			a := netip.MustParseAddr(tt.addr).WithZone("").Unmap()
			if (network == "tcp4" && !a.Is4()) || (network == "tcp6" && !a.Is6()) {
				continue
			}
			address := l.hostPort(tt.addr)
			conn, err := d.DialContext(ctx, network, address)
			wantBlocked(t, "DialContext("+network+", "+address+")", conn, err)
		}
	}

	named := &Dialer{Timeout: 5 * time.Second, Resolver: staticResolver(map[string][]string{
		"evil.example":     {"127.0.0.1"},
		"mapped.example":   {"::ffff:127.0.0.1"},
		"rebind.example":   {"127.0.0.1", "::1", "10.0.0.1", "169.254.169.254"},
		"nat64.example":    {"64:ff9b::7f00:1"},
		"metadata.example": {"169.254.169.254", "fd00:ec2::254"},
	})}
	for _, host := range []string{"evil.example", "mapped.example", "rebind.example", "nat64.example", "metadata.example"} {
		for _, network := range []string{"tcp", "tcp4"} {
			address := l.hostPort(host)
			conn, err := named.DialContext(ctx, network, address)
			if network == "tcp4" && (host == "nat64.example") {
				if err == nil {
					conn.Close()
					t.Errorf("DialContext(%s, %s) connected, want an error", network, address)
				}
				continue
			}
			wantBlocked(t, "DialContext("+network+", "+address+")", conn, err)
		}
	}

	// The real name, through net.DefaultResolver (/etc/hosts).
	t.Run("localhost", func(t *testing.T) {
		if _, err := net.DefaultResolver.LookupNetIP(ctx, "ip", "localhost"); err != nil {
			t.Skipf("localhost does not resolve here: %v", err)
		}
		conn, err := (&Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", l.hostPort("localhost"))
		wantBlocked(t, "DialContext(tcp, localhost)", conn, err)
	})

	if n := l.accepted.Load(); n != 0 {
		t.Errorf("listener accepted %d connections from refused dials, want 0", n)
	}

	allowed := &Dialer{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Timeout: 5 * time.Second}
	conn, err := allowed.DialContext(ctx, "tcp", l.hostPort("127.0.0.1"))
	if err != nil {
		t.Fatalf("DialContext with 127.0.0.0/8 allowed: %v", err)
	}
	awaitAccepted(t, conn)
	if n := l.close(); n != 1 {
		t.Errorf("listener accepted %d connections, want 1 (the allowed dial only)", n)
	}
}

// TestDialAddrRefusedInControl dials loopback directly, skipping Resolve:
// the refusal must come from the Control hook inside net.Dialer (so it wraps
// a *net.OpError) and no connection may reach the listener.
func TestDialAddrRefusedInControl(t *testing.T) {
	l := newCountingListener(t)
	var d Dialer
	for _, s := range []string{"127.0.0.1", "127.0.0.2", "::ffff:127.0.0.1"} {
		addr := netip.AddrPortFrom(netip.MustParseAddr(s), l.port)
		conn, err := d.DialAddr(t.Context(), "mx.example", addr)
		wantBlocked(t, "DialAddr("+addr.String()+")", conn, err)
		if err == nil {
			continue
		}
		var opErr *net.OpError
		if !errors.As(err, &opErr) || opErr.Op != "dial" {
			t.Errorf("DialAddr(%v) error = %v, want a refusal from inside net.Dialer (*net.OpError)", addr, err)
		}
		var be *BlockedError
		if !errors.As(err, &be) || be.Host != "mx.example" || be.Class != ClassLoopback {
			t.Errorf("DialAddr(%v) error = %v, want *BlockedError{Host: mx.example, Class: loopback}", addr, err)
		}
	}

	// A plain dial as sentinel: once it is accepted, every earlier
	// connection has been counted too.
	conn, err := net.Dial("tcp", l.hostPort("127.0.0.1"))
	if err != nil {
		t.Fatalf("sentinel dial: %v", err)
	}
	awaitAccepted(t, conn)
	if n := l.close() - 1; n != 0 {
		t.Errorf("listener accepted %d connections from DialAddr, want 0", n)
	}
}

// TestDialContextResolvesOnce: a resolver that rebinds after its first
// answer must be asked once, and the first answer dialled; net.Dialer never
// sees the name.
func TestDialContextResolvesOnce(t *testing.T) {
	l := newCountingListener(t)
	var calls atomic.Int64
	d := &Dialer{
		Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		Resolver: resolverFunc(func(context.Context, string, string) ([]netip.Addr, error) {
			if calls.Add(1) == 1 {
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			}
			return []netip.Addr{netip.MustParseAddr("127.0.0.2")}, nil
		}),
	}
	conn, err := d.DialContext(t.Context(), "tcp", l.hostPort("rebind.example"))
	if err != nil {
		t.Fatalf("DialContext: %v", err)
	}
	if got, want := conn.RemoteAddr().String(), l.hostPort("127.0.0.1"); got != want {
		t.Errorf("connected to %s, want %s", got, want)
	}
	awaitAccepted(t, conn)
	if n := calls.Load(); n != 1 {
		t.Errorf("resolver called %d times, want 1", n)
	}
	if n := l.close(); n != 1 {
		t.Errorf("listener accepted %d connections, want 1", n)
	}
}

func TestControl(t *testing.T) {
	tests := []struct {
		allow            string
		network, address string
		want             Class // "" = allowed; "?" = refused as unparseable
	}{
		{"", "tcp4", "8.8.8.8:25", ""},
		{"", "tcp6", "[2a00:1450::1]:993", ""},
		{"", "tcp4", "127.0.0.1:25", ClassLoopback},
		{"", "tcp6", "[::1]:25", ClassLoopback},
		{"", "tcp6", "[::ffff:127.0.0.1]:25", ClassLoopback},
		{"", "tcp4", "10.0.0.1:25", ClassPrivate},
		{"", "tcp4", "169.254.169.254:80", ClassMetadata},
		{"", "tcp6", "[fd00:ec2::254]:80", ClassMetadata},
		{"", "tcp6", "[64:ff9b::7f00:1]:25", ClassNAT64},
		{"", "tcp6", "[fe80::1%eth0]:25", ClassLinkLocal},
		{"", "tcp4", "0.0.0.0:25", ClassUnspecified},
		{"", "tcp4", "localhost:25", "?"},
		{"", "tcp4", "", "?"},
		{"", "tcp4", "127.0.0.1", "?"},
		{"127.0.0.0/8", "tcp4", "127.0.0.1:25", ""},
		{"127.0.0.0/8", "tcp6", "[::ffff:127.0.0.1]:25", ""},
		{"127.0.0.0/8", "tcp6", "[::1]:25", ClassLoopback},
		{"127.0.0.0/8", "tcp4", "localhost:25", "?"},
	}
	for _, tt := range tests {
		allow, err := ParseAllowList(tt.allow)
		if err != nil {
			t.Fatal(err)
		}
		d := &Dialer{Allow: allow}
		err = d.control("mx.example")(tt.network, tt.address, nil)
		switch tt.want {
		case "":
			if err != nil {
				t.Errorf("Allow %q: control(%s, %q) = %v, want nil", tt.allow, tt.network, tt.address, err)
			}
		case "?":
			if !errors.Is(err, ErrBlocked) {
				t.Errorf("Allow %q: control(%s, %q) = %v, want ErrBlocked", tt.allow, tt.network, tt.address, err)
			}
		default:
			var be *BlockedError
			if !errors.As(err, &be) || be.Class != tt.want || be.Host != "mx.example" {
				t.Errorf("Allow %q: control(%s, %q) = %v, want a %q *BlockedError for mx.example", tt.allow, tt.network, tt.address, err, tt.want)
			}
		}
	}
}

func TestResolve(t *testing.T) {
	r := staticResolver(map[string][]string{
		"mixed.example":   {"10.0.0.1", "8.8.8.8", "::ffff:1.1.1.1", "127.0.0.1", "2a00:1450::1", "fe80::1%eth0"},
		"dup.example":     {"8.8.8.8", "::ffff:8.8.8.8", "8.8.8.8"},
		"private.example": {"10.0.0.1", "::1", "169.254.169.254"},
		"empty.example":   {},
		"local.example":   {"127.0.0.1", "10.0.0.1"},
		"zone.example":    {"fe80::1%eth0"},
	})
	p := netip.MustParsePrefix
	tests := []struct {
		allow []netip.Prefix
		host  string
		want  []string // nil: an error
		class Class    // of the *BlockedError, if refused
	}{
		{nil, "mixed.example", []string{"8.8.8.8", "1.1.1.1", "2a00:1450::1"}, ""},
		{nil, "dup.example", []string{"8.8.8.8"}, ""},
		{nil, "private.example", nil, ClassPrivate},
		{nil, "local.example", nil, ClassLoopback},
		{[]netip.Prefix{p("127.0.0.0/8")}, "local.example", []string{"127.0.0.1"}, ""},
		{[]netip.Prefix{p("fe80::/10")}, "zone.example", []string{"fe80::1"}, ""},
		{[]netip.Prefix{p("0.0.0.0/0"), p("::/0")}, "mixed.example", []string{"10.0.0.1", "8.8.8.8", "1.1.1.1", "127.0.0.1", "2a00:1450::1", "fe80::1"}, ""},
	}
	for _, tt := range tests {
		d := &Dialer{Allow: tt.allow, Resolver: r}
		got, err := d.Resolve(t.Context(), tt.host)
		if tt.want == nil {
			be, ok := err.(*BlockedError)
			if !ok || be.Class != tt.class || be.Host != tt.host {
				t.Errorf("Allow %v: Resolve(%q) = %v, %v; want a %q *BlockedError", tt.allow, tt.host, got, err, tt.class)
			}
			continue
		}
		if err != nil {
			t.Errorf("Allow %v: Resolve(%q) error = %v", tt.allow, tt.host, err)
			continue
		}
		var want []netip.Addr
		for _, s := range tt.want {
			want = append(want, netip.MustParseAddr(s))
		}
		if !slices.Equal(got, want) {
			t.Errorf("Allow %v: Resolve(%q) = %v, want %v", tt.allow, tt.host, got, want)
		}
	}

	d := &Dialer{Resolver: r}
	_, err := d.Resolve(t.Context(), "nx.example")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || errors.Is(err, ErrBlocked) || !strings.Contains(err.Error(), "resolve nx.example: ") {
		t.Errorf(`Resolve("nx.example") error = %v, want a wrapped *net.DNSError naming the host`, err)
	}
	if _, err := d.Resolve(t.Context(), "empty.example"); err == nil || errors.Is(err, ErrBlocked) || !strings.Contains(err.Error(), "empty.example") {
		t.Errorf(`Resolve("empty.example") error = %v, want "no address" naming the host`, err)
	}
	if _, err := d.Resolve(t.Context(), ""); err == nil {
		t.Error(`Resolve("") error = nil, want an error (empty means the local system to net)`)
	}
}

func TestResolveLiteral(t *testing.T) {
	d := &Dialer{Resolver: noDNS(t)}
	tests := []struct {
		host string
		want string // "" = refused
	}{
		{"8.8.8.8", "8.8.8.8"},
		{"::ffff:8.8.8.8", "8.8.8.8"},
		{"2a00:1450::1%eth0", "2a00:1450::1"},
		{"10.0.0.1", ""},
		{"::ffff:127.0.0.1", ""},
		{"fe80::1%eth0", ""},
	}
	for _, tt := range tests {
		got, err := d.Resolve(t.Context(), tt.host)
		if tt.want == "" {
			if !errors.Is(err, ErrBlocked) || !strings.HasPrefix(err.Error(), "address ") {
				t.Errorf("Resolve(%q) = %v, %v; want a refusal of the literal", tt.host, got, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, []netip.Addr{netip.MustParseAddr(tt.want)}) {
			t.Errorf("Resolve(%q) = %v, %v; want [%s]", tt.host, got, err, tt.want)
		}
	}
}

func TestResolveTimeout(t *testing.T) {
	d := &Dialer{
		Timeout: time.Millisecond,
		Resolver: resolverFunc(func(ctx context.Context, _, _ string) ([]netip.Addr, error) {
			<-ctx.Done() // a resolver that never answers
			return nil, ctx.Err()
		}),
	}
	_, err := d.Resolve(t.Context(), "slow.example")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Resolve(slow.example) error = %v, want context.DeadlineExceeded after Timeout", err)
	}
}

func TestDialContextLookupNetwork(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	d := &Dialer{Resolver: resolverFunc(func(_ context.Context, network, host string) ([]netip.Addr, error) {
		mu.Lock()
		asked = append(asked, network)
		mu.Unlock()
		return []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")}, nil
	})}
	for _, network := range []string{"tcp", "tcp4", "tcp6"} {
		conn, err := d.DialContext(t.Context(), network, "mx.example:25")
		wantBlocked(t, "DialContext("+network+", mx.example:25)", conn, err)
	}
	if want := []string{"ip", "ip4", "ip6"}; !slices.Equal(asked, want) {
		t.Errorf("lookup networks = %v, want %v", asked, want)
	}
}

func TestDialContextBadInput(t *testing.T) {
	d := &Dialer{Resolver: noDNS(t), Allow: []netip.Prefix{netip.MustParsePrefix("::/0"), netip.MustParsePrefix("0.0.0.0/0")}}
	tests := []struct {
		network, address, want string
	}{
		{"udp", "8.8.8.8:53", "unsupported network"},
		{"tcp", "mx.example", "missing port"},
		{"tcp", "mx.example:smtp", "invalid port"},
		{"tcp", "mx.example:0", "invalid port"},
		{"tcp", "mx.example:70000", "invalid port"},
		{"tcp", ":25", "empty host"},
		{"tcp4", "[::1]:25", "no IPv4 address"},
		{"tcp6", "127.0.0.1:25", "no IPv6 address"},
	}
	for _, tt := range tests {
		conn, err := d.DialContext(t.Context(), tt.network, tt.address)
		if err == nil {
			conn.Close()
			t.Errorf("DialContext(%s, %q) connected, want an error containing %q", tt.network, tt.address, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) || errors.Is(err, ErrBlocked) {
			t.Errorf("DialContext(%s, %q) error = %v, want one containing %q (not ErrBlocked)", tt.network, tt.address, err, tt.want)
		}
	}
}

// TestDialContextTriesInOrder: the first address refuses the connection,
// the second accepts it.
func TestDialContextTriesInOrder(t *testing.T) {
	l := newCountingListener(t)
	d := &Dialer{
		Allow:    []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		Timeout:  5 * time.Second,
		Resolver: staticResolver(map[string][]string{"two.example": {"::1", "127.0.0.1"}}),
	}
	conn, err := d.DialContext(t.Context(), "tcp", l.hostPort("two.example"))
	if err != nil {
		t.Fatalf("DialContext: %v", err)
	}
	if got, want := conn.RemoteAddr().String(), l.hostPort("127.0.0.1"); got != want {
		t.Errorf("connected to %s, want %s", got, want)
	}
	awaitAccepted(t, conn)

	// When none connects, the first error is returned, naming the host.
	d.Resolver = staticResolver(map[string][]string{"none.example": {"::1"}})
	_, err = d.DialContext(t.Context(), "tcp", l.hostPort("none.example"))
	if err == nil || !strings.HasPrefix(err.Error(), "dial none.example: ") || errors.Is(err, ErrBlocked) {
		t.Errorf("DialContext(none.example) error = %v, want a connection error prefixed with the host", err)
	}
	if n := l.close(); n != 1 {
		t.Errorf("listener accepted %d connections, want 1", n)
	}
}

func TestDialContextCanceled(t *testing.T) {
	l := newCountingListener(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	d := &Dialer{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	conn, err := d.DialContext(ctx, "tcp", l.hostPort("127.0.0.1"))
	if err == nil {
		conn.Close()
		t.Fatal("DialContext with a canceled context connected")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("DialContext with a canceled context error = %v, want context.Canceled", err)
	}
}

func TestNetDialerSettings(t *testing.T) {
	tests := []struct {
		d                  Dialer
		timeout, keepAlive time.Duration
	}{
		{Dialer{}, 10 * time.Second, 30 * time.Second},
		{Dialer{Timeout: -1, KeepAlive: -1}, 10 * time.Second, 30 * time.Second},
		{Dialer{Timeout: 3 * time.Second, KeepAlive: 45 * time.Second}, 3 * time.Second, 45 * time.Second},
	}
	for _, tt := range tests {
		nd := tt.d.netDialer("mx.example")
		want := net.KeepAliveConfig{Enable: true, Idle: tt.keepAlive, Interval: tt.keepAlive}
		if nd.Timeout != tt.timeout || nd.KeepAliveConfig != want {
			t.Errorf("Dialer%+v: net.Dialer timeout %v, keep-alive %+v; want %v, %+v", tt.d, nd.Timeout, nd.KeepAliveConfig, tt.timeout, want)
		}
		if nd.Control == nil || nd.ControlContext != nil || nd.Resolver != nil {
			t.Errorf("Dialer%+v: net.Dialer must have the Control hook only", tt.d)
		}
	}
}
