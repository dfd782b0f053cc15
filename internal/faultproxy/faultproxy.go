// Package faultproxy is a TCP proxy that injects the faults of a real
// network between two processes on loopback: added latency, connection
// resets, and a black hole (connections accepted, nothing forwarded, as
// with a paused or unreachable host). The chaos suite puts it between
// trainers and the coordinators or the store, since this kernel has no
// netem.
package faultproxy

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Faults is what the proxy does to traffic. The zero value forwards it
// untouched.
type Faults struct {
	// Latency delays every chunk of data in each direction.
	Latency time.Duration
	// ResetRate is the probability, per chunk forwarded, that the
	// connection is reset (closed with RST) instead.
	ResetRate float64
	// BlackHole holds every connection open and forwards nothing, new
	// connections included, until it is lifted.
	BlackHole bool
}

// Proxy forwards connections accepted on its address to a target.
type Proxy struct {
	lis    net.Listener
	target string

	mu     sync.Mutex // guards faults, conns, closed and lifted
	faults Faults
	conns  map[net.Conn]struct{}
	lifted chan struct{} // closed when a black hole is lifted
	closed bool
	wg     sync.WaitGroup
}

// Start listens on listen (e.g. "127.0.0.1:0") and forwards to target.
func Start(listen, target string) (*Proxy, error) {
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &Proxy{lis: lis, target: target, conns: map[net.Conn]struct{}{}, lifted: make(chan struct{})}
	close(p.lifted)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address clients dial instead of the target.
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// Set changes the faults; they apply to open connections too.
func (p *Proxy) Set(f Faults) {
	p.mu.Lock()
	defer p.mu.Unlock()
	wasHole := p.faults.BlackHole
	p.faults = f
	switch {
	case f.BlackHole && !wasHole:
		p.lifted = make(chan struct{})
	case !f.BlackHole && wasHole:
		close(p.lifted)
	}
}

// Faults returns the faults in force.
func (p *Proxy) Faults() Faults {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faults
}

// Close stops accepting, closes every connection and waits for the
// forwarding goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	if p.faults.BlackHole {
		p.faults.BlackHole = false
		close(p.lifted)
	}
	p.mu.Unlock()
	err := p.lis.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// serve connects one client to the target (after any black hole is
// lifted) and pumps both directions.
func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)
	if !p.wait() {
		return
	}
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return // the client sees its connection closed, as with a refused one
	}
	if !p.track(server) {
		server.Close()
		return
	}
	defer p.untrack(server)
	done := make(chan struct{}, 2)
	go func() { p.pump(server, client); done <- struct{}{} }()
	go func() { p.pump(client, server); done <- struct{}{} }()
	<-done
	// One side ended: end both, so the other pump returns.
	client.Close()
	server.Close()
	<-done
}

// wait blocks while a black hole is in force; false when the proxy closed.
func (p *Proxy) wait() bool {
	p.mu.Lock()
	lifted, closed := p.lifted, p.closed
	p.mu.Unlock()
	if closed {
		return false
	}
	<-lifted
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.closed
}

// pump copies src to dst chunk by chunk, applying the faults in force.
func (p *Proxy) pump(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.wait() {
				return
			}
			f := p.Faults()
			if f.ResetRate > 0 && rand.Float64() < f.ResetRate {
				reset(src)
				reset(dst)
				return
			}
			if f.Latency > 0 {
				time.Sleep(f.Latency)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			return
		}
	}
}

// reset closes c with an RST rather than a FIN, as a middlebox or a
// crashed peer would.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}
