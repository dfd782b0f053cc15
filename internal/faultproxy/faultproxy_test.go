package faultproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// echo starts a line echo server and returns its address.
func echo(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return lis.Addr().String()
}

func roundTrip(c net.Conn, within time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(within))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

func TestFaults(t *testing.T) {
	p, err := Start("127.0.0.1:0", echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	c := dial()
	if got, err := roundTrip(c, 5*time.Second); err != nil || got != "ping\n" {
		t.Fatalf("clean round trip: %q %v", got, err)
	}

	// A black hole: the open connection and a new one get nothing back...
	p.Set(Faults{BlackHole: true})
	fresh := dial()
	for _, conn := range []net.Conn{c, fresh} {
		if _, err := roundTrip(conn, 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("round trip through a black hole: %v, want a timeout", err)
		}
	}
	// ...until it is lifted: what was sent arrives.
	p.Set(Faults{})
	_ = fresh.SetDeadline(time.Now().Add(5 * time.Second))
	if got, err := bufio.NewReader(fresh).ReadString('\n'); err != nil || got != "ping\n" {
		t.Fatalf("after the black hole: %q %v", got, err)
	}

	// Latency is added to each direction.
	p.Set(Faults{Latency: 100 * time.Millisecond})
	c3 := dial()
	start := time.Now()
	if _, err := roundTrip(c3, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("round trip with 100 ms each way took %v", d)
	}

	// A reset rate of 1 resets the connection on its first data.
	p.Set(Faults{ResetRate: 1})
	if _, err := roundTrip(dial(), 5*time.Second); err == nil {
		t.Fatal("a round trip survived a reset rate of 1")
	}
}
