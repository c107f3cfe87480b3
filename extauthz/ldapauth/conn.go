package ldapauth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// dialer opens connections: TCP, then TLS for ldaps:// or StartTLS.
type dialer struct {
	addr           string
	ldaps          bool
	startTLS       bool
	tls            *tls.Config
	dialTimeout    time.Duration
	requestTimeout time.Duration
}

func (d dialer) dial(ctx context.Context) (*ldap.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.dialTimeout)
	defer cancel()
	nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, err
	}
	if d.ldaps {
		tc := tls.Client(nc, d.tls.Clone())
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("ldaps handshake: %w", err)
		}
		nc = tc
	}
	c := ldap.NewConn(nc, d.ldaps)
	c.Start()
	c.SetTimeout(d.requestTimeout)
	if d.startTLS {
		if err := withCtx(ctx, c, d.requestTimeout, func() error { return c.StartTLS(d.tls.Clone()) }); err != nil {
			c.Close()
			return nil, fmt.Errorf("starttls: %w", err)
		}
	}
	return c, nil
}

// withCtx runs one LDAP operation on c bounded by ctx: the request timeout
// is cut to the context's deadline, and cancelling ctx closes c (go-ldap
// has no per-operation context). A closed c is never pooled again.
func withCtx(ctx context.Context, c *ldap.Conn, timeout time.Duration, op func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left < timeout {
			timeout = max(left, time.Millisecond)
		}
	}
	c.SetTimeout(timeout)
	stop := context.AfterFunc(ctx, func() { c.Close() })
	err := op()
	if !stop() && err != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

func searchCtx(ctx context.Context, c *ldap.Conn, timeout time.Duration, req *ldap.SearchRequest) (*ldap.SearchResult, error) {
	var res *ldap.SearchResult
	err := withCtx(ctx, c, timeout, func() error {
		var err error
		res, err = c.Search(req)
		return err
	})
	return res, err
}

// pool holds at most size open connections, idle ones ready for reuse.
type pool struct {
	dial func(context.Context) (*ldap.Conn, error)
	sem  chan struct{}   // one token per open (checked-out or idle) connection slot in use
	idle chan *ldap.Conn // idle connections
}

func newPool(size int, dial func(context.Context) (*ldap.Conn, error)) *pool {
	return &pool{dial: dial, sem: make(chan struct{}, size), idle: make(chan *ldap.Conn, size)}
}

// do runs op on a pooled connection. A reused connection that turns out to
// be dead (the server restarted or dropped it while idle) is replaced by a
// fresh one once.
func (p *pool) do(ctx context.Context, op func(*ldap.Conn) error) error {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("waiting for an LDAP connection: %w", ctx.Err())
	}
	defer func() { <-p.sem }()
	for attempt := 0; ; attempt++ {
		c, reused, err := p.get(ctx)
		if err != nil {
			return err
		}
		err = op(c)
		if err != nil && (c.IsClosing() || isNetwork(err)) {
			c.Close()
			if reused && attempt == 0 && ctx.Err() == nil && !isTimeout(err) {
				continue
			}
			return err
		}
		p.put(c)
		return err
	}
}

func (p *pool) get(ctx context.Context) (*ldap.Conn, bool, error) {
	for {
		select {
		case c := <-p.idle:
			if c.IsClosing() {
				c.Close()
				continue
			}
			return c, true, nil
		default:
			c, err := p.dial(ctx)
			return c, false, err
		}
	}
}

func (p *pool) put(c *ldap.Conn) {
	if c.IsClosing() {
		c.Close()
		return
	}
	select {
	case p.idle <- c:
	default:
		c.Close()
	}
}

func (p *pool) close() {
	for {
		select {
		case c := <-p.idle:
			c.Close()
		default:
			return
		}
	}
}

// isTimeout reports an operation that ran out of time (the caller's
// deadline, go-ldap's request timeout, or the server's time limit).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &ne) && ne.Timeout() ||
		ldap.IsErrorAnyOf(err, ldap.LDAPResultTimeout, ldap.LDAPResultTimeLimitExceeded) ||
		ldap.IsErrorWithCode(err, ldap.ErrorNetwork) && strings.Contains(err.Error(), "timed out")
}
