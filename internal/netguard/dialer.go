package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// Defaults used when the Dialer's fields are zero.
const (
	DefaultTimeout   = 10 * time.Second
	DefaultKeepAlive = 30 * time.Second
)

// Resolver is what the dialer needs from DNS; *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Dialer dials user-named hosts. The zero value is usable: it resolves with
// net.DefaultResolver, waits [DefaultTimeout] for each connection, sends TCP
// keep-alive probes every [DefaultKeepAlive], and allows public addresses
// only. A Dialer is safe for concurrent use as long as its fields are not
// changed.
type Dialer struct {
	// Allow lists the ranges an admin allowed (MAILSYNC_ALLOW_HOSTS, see
	// [ParseAllowList]). An address in any of them is allowed whatever its
	// class.
	Allow []netip.Prefix
	// Resolver looks names up; nil means net.DefaultResolver.
	Resolver Resolver
	// Timeout bounds the name lookup and each connection attempt
	// separately; zero or negative means DefaultTimeout.
	Timeout time.Duration
	// KeepAlive is the TCP keep-alive idle time and probe interval; zero or
	// negative means DefaultKeepAlive. Keep-alive cannot be turned off:
	// go-imap has no read timeout and relies on it to notice a dead peer.
	KeepAlive time.Duration
}

// Check returns nil when addr may be dialled, else a *BlockedError naming
// host. The address is checked without its zone and, if IPv4-mapped, as
// IPv4.
func (d *Dialer) Check(host string, addr netip.Addr) error {
	a := addr.WithZone("").Unmap()
	if addr.IsValid() && allowed(d.Allow, a) {
		return nil
	}
	if c := Classify(a); c != ClassPublic {
		return &BlockedError{Host: host, Addr: addr.WithZone(""), Class: c}
	}
	return nil
}

// Resolve looks host up and returns every address it may dial, in the
// resolver's order, unmapped, without zones and without duplicates. An IP
// literal resolves to itself without DNS. When every address is refused it
// returns the *BlockedError of the first. Lookup errors are wrapped with the
// host name.
func (d *Dialer) Resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	return d.resolve(ctx, "ip", host)
}

// resolve is Resolve for the lookup network "ip", "ip4" or "ip6".
func (d *Dialer) resolve(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if host == "" {
		// net would take an empty host to mean the local system.
		return nil, errors.New("resolve: empty host name")
	}
	var found []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		found = []netip.Addr{a}
	} else {
		ctx, cancel := context.WithTimeout(ctx, d.timeout())
		defer cancel()
		found, err = d.resolver().LookupNetIP(ctx, network, host)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
	}

	var candidates []netip.Addr
	for _, a := range found {
		a = a.WithZone("").Unmap()
		if (network == "ip4" && !a.Is4()) || (network == "ip6" && !a.Is6()) || slices.Contains(candidates, a) {
			continue
		}
		candidates = append(candidates, a)
	}
	if len(candidates) == 0 {
		return nil, fmt.Errorf("resolve %s: no %s address", host, familyName(network))
	}

	var ok []netip.Addr
	var firstBlocked error
	for _, a := range candidates {
		if err := d.Check(host, a); err != nil {
			if firstBlocked == nil {
				firstBlocked = err
			}
			continue
		}
		ok = append(ok, a)
	}
	if len(ok) == 0 {
		return nil, firstBlocked
	}
	return ok, nil
}

// DialAddr connects to one already-resolved address over TCP. The address
// is checked again in the net.Dialer's Control hook, on the address actually
// being dialled, before any packet is sent: that check is the one that
// counts. host is only used in error messages.
func (d *Dialer) DialAddr(ctx context.Context, host string, addr netip.AddrPort) (net.Conn, error) {
	if host == "" {
		host = addr.Addr().String()
	}
	target := netip.AddrPortFrom(addr.Addr().WithZone("").Unmap(), addr.Port())
	conn, err := d.netDialer(host).DialContext(ctx, "tcp", target.String())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", host, err)
	}
	return conn, nil
}

// DialContext connects to address ("host:port", numeric port) on network
// "tcp", "tcp4" or "tcp6": it resolves host, drops refused addresses and
// tries the others in order until one connects, returning the first error if
// none does. It has the signature of net.Dialer.DialContext, to be plugged
// into SMTP and IMAP clients.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var lookup string
	switch network {
	case "tcp":
		lookup = "ip"
	case "tcp4":
		lookup = "ip4"
	case "tcp6":
		lookup = "ip6"
	default:
		return nil, fmt.Errorf("dial %s %s: unsupported network", network, address)
	}
	host, portText, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", address, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("dial %s: invalid port %q", address, portText)
	}
	addrs, err := d.resolve(ctx, lookup, host)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", address, err)
	}
	var first error
	for _, a := range addrs {
		conn, err := d.DialAddr(ctx, host, netip.AddrPortFrom(a, uint16(port)))
		if err == nil {
			return conn, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
}

// netDialer returns the net.Dialer for one connection attempt.
func (d *Dialer) netDialer(host string) *net.Dialer {
	keepAlive := d.KeepAlive
	if keepAlive <= 0 {
		keepAlive = DefaultKeepAlive
	}
	return &net.Dialer{
		Timeout:         d.timeout(),
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: keepAlive, Interval: keepAlive},
		Control:         d.control(host),
	}
}

// control returns the Control hook: it runs after the socket is created and
// before connect(2), and refuses the address being dialled unless Check
// allows it. An address it cannot parse is refused.
func (d *Dialer) control(host string) func(network, address string, _ syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("check %s address %q: %w", network, address, ErrBlocked)
		}
		return d.Check(host, ap.Addr())
	}
}

func (d *Dialer) resolver() Resolver {
	if d.Resolver == nil {
		return net.DefaultResolver
	}
	return d.Resolver
}

func (d *Dialer) timeout() time.Duration {
	if d.Timeout <= 0 {
		return DefaultTimeout
	}
	return d.Timeout
}

func familyName(network string) string {
	switch network {
	case "ip4":
		return "IPv4"
	case "ip6":
		return "IPv6"
	}
	return "IP"
}
