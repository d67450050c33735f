package netguard

import (
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// TestKeepAliveOnSocket reads the keep-alive options back from a real
// socket: on by default with a 30 s idle time, and the configured period
// otherwise.
func TestKeepAliveOnSocket(t *testing.T) {
	l := newCountingListener(t)
	allow := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	tests := []struct {
		keepAlive time.Duration
		wantIdle  int // seconds
	}{
		{0, 30},
		{45 * time.Second, 45},
	}
	for _, tt := range tests {
		d := &Dialer{Allow: allow, KeepAlive: tt.keepAlive}
		conn, err := d.DialContext(t.Context(), "tcp", l.hostPort("127.0.0.1"))
		if err != nil {
			t.Fatalf("DialContext: %v", err)
		}
		raw, err := conn.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatalf("SyscallConn: %v", err)
		}
		var on, idle int
		var onErr, idleErr error
		if err := raw.Control(func(fd uintptr) {
			on, onErr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
			idle, idleErr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
		}); err != nil {
			t.Fatalf("RawConn.Control: %v", err)
		}
		awaitAccepted(t, conn)
		if onErr != nil || idleErr != nil {
			t.Skipf("cannot read keep-alive options here: %v, %v", onErr, idleErr)
		}
		if on != 1 || idle != tt.wantIdle {
			t.Errorf("KeepAlive %v: SO_KEEPALIVE = %d, TCP_KEEPIDLE = %d; want 1, %d", tt.keepAlive, on, idle, tt.wantIdle)
		}
	}
}
