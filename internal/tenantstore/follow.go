package tenantstore

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// FollowOptions tune Follow.
type FollowOptions struct {
	// Resync is the period of the full read (config.DefaultTenantStoreResync
	// when 0).
	Resync time.Duration
	// Retry is the wait before reconnecting after a lost connection
	// (default 1s).
	Retry time.Duration
	Log   *slog.Logger
	// Event (optional) is told "notify", "resync", "reconnect" or "error"
	// as each happens (metrics).
	Event func(kind string)
}

// Follow calls apply with every tenant of the store, by id, now and after
// each change, until ctx ends. A change is learned from its NOTIFY (then
// only that tenant is read again), from the full read every Resync (a
// notification can be missed while the connection is down), and after a
// reconnect, which also reads everything. apply is called from one
// goroutine, only when the set changed, and never after Follow returned.
//
// Follow returns once the first full read is done (or with its error);
// the following runs in a goroutine of its own that ends with ctx; done is
// closed when it has.
func (s *Store) Follow(ctx context.Context, o FollowOptions, apply func([]Doc)) (done <-chan struct{}, err error) {
	if o.Resync <= 0 {
		o.Resync = time.Minute
	}
	if o.Retry <= 0 {
		o.Retry = time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Event == nil {
		o.Event = func(string) {}
	}
	f := &follower{s: s, o: o, apply: apply, docs: map[string]Doc{}}
	conn, err := f.listen(ctx)
	if err != nil {
		return nil, err
	}
	if err := f.readAll(ctx); err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		f.run(ctx, conn)
	}()
	return ch, nil
}

type follower struct {
	s     *Store
	o     FollowOptions
	apply func([]Doc)
	docs  map[string]Doc // what apply was last given; only run's goroutine touches it after start
	read  bool           // docs were read once
	// sorted is docs as apply was last given them, by id: one tenant's
	// change is a copy of it with that entry replaced, inserted or
	// removed, not a sort of every document (0.25 s at 100,000). Never
	// changed once given (apply keeps it).
	sorted []Doc
}

func (f *follower) listen(ctx context.Context) (*pgx.Conn, error) {
	conf := f.s.conf.Copy()
	if conf.RuntimeParams == nil {
		conf.RuntimeParams = map[string]string{}
	}
	conf.RuntimeParams["application_name"] = "kailash-tenant-store-listen"
	conn, err := pgx.ConnectConfig(ctx, conf)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{Channel}.Sanitize()); err != nil {
		_ = conn.Close(ctx)
		return nil, err
	}
	return conn, nil
}

// run waits for notifications, with a deadline at the next resync; a lost
// connection is reopened (after Retry) and followed by a full read.
func (f *follower) run(ctx context.Context, conn *pgx.Conn) {
	next := time.Now().Add(f.o.Resync)
	for ctx.Err() == nil {
		if conn == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(f.o.Retry):
			}
			var err error
			if conn, err = f.listen(ctx); err != nil {
				if ctx.Err() == nil {
					f.o.Event("error")
					f.o.Log.Warn("tenant store: cannot listen for changes; retrying", "err", err)
				}
				continue
			}
			f.o.Event("reconnect")
			f.o.Log.Info("tenant store: listening for changes again")
			f.resync(ctx)
			next = time.Now().Add(f.o.Resync)
			continue
		}
		wctx, cancel := context.WithDeadline(ctx, next)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			f.o.Event("notify")
			f.readOne(ctx, n.Payload)
		case ctx.Err() != nil:
		case time.Now().After(next):
			// The deadline interrupted the wait, which leaves pgx's
			// connection unusable: start a fresh one (and read all).
			_ = conn.Close(context.WithoutCancel(ctx))
			if conn, err = f.listen(ctx); err != nil {
				conn = nil
				f.o.Event("error")
				f.o.Log.Warn("tenant store: cannot listen for changes; retrying", "err", err)
				continue
			}
			f.o.Event("resync")
			f.resync(ctx)
			next = time.Now().Add(f.o.Resync)
		default:
			f.o.Event("error")
			f.o.Log.Warn("tenant store: lost the connection listening for changes; reconnecting", "err", err)
			_ = conn.Close(context.WithoutCancel(ctx))
			conn = nil
		}
	}
	if conn != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
	}
}

func (f *follower) resync(ctx context.Context) {
	if err := f.readAll(ctx); err != nil && ctx.Err() == nil {
		f.o.Event("error")
		f.o.Log.Warn("tenant store: full read failed; the tenants in force keep serving", "err", err)
	}
}

// readAll replaces the set with the table's and applies it if it changed.
func (f *follower) readAll(ctx context.Context) error {
	docs, err := f.s.List(ctx)
	if err != nil {
		return err
	}
	m := make(map[string]Doc, len(docs))
	for _, d := range docs {
		m[d.ID] = d
	}
	if f.read && len(m) == len(f.docs) && maps.EqualFunc(m, f.docs, func(a, b Doc) bool { return a.Version == b.Version }) {
		return nil
	}
	f.docs, f.read = m, true
	f.push()
	return nil
}

// readOne reads one tenant again (it changed, or went).
func (f *follower) readOne(ctx context.Context, id string) {
	d, err := f.s.Get(ctx, id)
	switch {
	case err == ErrNotFound:
		if _, ok := f.docs[id]; !ok {
			return
		}
		delete(f.docs, id)
		f.pushOne(id, nil)
	case err != nil:
		f.o.Event("error")
		f.o.Log.Warn("tenant store: cannot read a changed tenant; the next full read retries", "tenant", id, "err", err)
		return
	default:
		if old, ok := f.docs[id]; ok && old.Version == d.Version {
			return
		}
		f.docs[id] = d
		f.pushOne(id, &d)
	}
}

func (f *follower) push() {
	docs := slices.Collect(maps.Values(f.docs))
	sortDocs(docs)
	f.sorted = docs
	f.apply(docs)
}

// pushOne applies docs after the change of one: id's document is now d
// (nil: gone). f.docs has the change already.
func (f *follower) pushOne(id string, d *Doc) {
	if f.sorted == nil {
		f.push()
		return
	}
	i, found := slices.BinarySearchFunc(f.sorted, id, func(x Doc, id string) int { return strings.Compare(x.ID, id) })
	next := make([]Doc, 0, len(f.sorted)+1)
	next = append(next, f.sorted[:i]...)
	if d != nil {
		next = append(next, *d)
	}
	if found {
		i++
	}
	next = append(next, f.sorted[i:]...)
	if len(next) != len(f.docs) { // never: sorted and docs hold the same ids
		f.push()
		return
	}
	f.sorted = next
	f.apply(next)
}
