package store

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// Peers reaches the other runners on the same PostgreSQL database through
// LISTEN/NOTIFY (the store already is PostgreSQL: no second dependency,
// such as Redis pub/sub, for runner replicas). A notification is delivered
// to every listening runner, the sender included; it is not kept for a
// runner that is not listening.
type Peers struct {
	s    *sqlStore
	conf *pgx.ConnConfig
	log  *slog.Logger
}

// PeersOf is st's Peers: nil for a store without other runners (SQLite,
// memory) or one that is not this package's.
func PeersOf(st Store) *Peers {
	s, ok := st.(*sqlStore)
	if !ok {
		return nil
	}
	d, ok := s.d.(*postgresDialect)
	if !ok {
		return nil
	}
	return &Peers{s: s, conf: d.conf, log: s.lease.log}
}

// Notify sends payload (at most 8000 bytes) on channel to every listening
// runner.
func (p *Peers) Notify(ctx context.Context, channel, payload string) error {
	_, err := p.s.d.(*postgresDialect).db.ExecContext(ctx, `SELECT pg_notify($1, $2)`, channel, payload)
	return err
}

// Listen calls f with every payload sent on channel until ctx ends, on a
// connection of its own, reconnecting after an error. It returns once the
// first LISTEN is in place (or with the error that prevented it).
func (p *Peers) Listen(ctx context.Context, channel string, f func(payload string)) error {
	conn, err := p.listen(ctx, channel)
	if err != nil {
		return fmt.Errorf("listening for other runners on %q: %w", channel, err)
	}
	go func() {
		for {
			for conn != nil {
				n, err := conn.WaitForNotification(ctx)
				if err != nil {
					_ = conn.Close(context.WithoutCancel(ctx))
					conn = nil
					if ctx.Err() != nil {
						return
					}
					p.log.Warn("runner: lost the connection listening for other runners; reconnecting", "channel", channel, "err", err)
					break
				}
				f(n.Payload)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			if conn, err = p.listen(ctx, channel); err != nil && ctx.Err() == nil {
				p.log.Warn("runner: listening for other runners failed; retrying", "channel", channel, "err", err)
			}
		}
	}()
	return nil
}

func (p *Peers) listen(ctx context.Context, channel string) (*pgx.Conn, error) {
	conf := p.conf.Copy()
	if conf.RuntimeParams == nil {
		conf.RuntimeParams = map[string]string{}
	}
	conf.RuntimeParams["application_name"] = "kailash-runner-listen"
	conn, err := pgx.ConnectConfig(ctx, conf)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		_ = conn.Close(ctx)
		return nil, err
	}
	return conn, nil
}
