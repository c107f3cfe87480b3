package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/kailash-gw/kailash/workflow"
	"github.com/kailash-gw/kailash/workflow/store"
)

// eventsChannel carries execution events between runner replicas
// (PostgreSQL LISTEN/NOTIFY), so an event stream on any replica shows the
// executions of every replica.
const eventsChannel = "kailash_runner_events"

// fanoutWindow is how long events are gathered before they are sent: the
// delay events of another replica's executions have on a stream.
const fanoutWindow = 50 * time.Millisecond

// maxNotify keeps a batch under PostgreSQL's 8000-byte NOTIFY payload.
const maxNotify = 7000

// fanout sends this replica's events to the others in batches gathered for
// fanoutWindow, from one goroutine, so an execution never waits on the
// database for its events;
// when the queue is full events are dropped for the other replicas
// (counted), as a slow subscriber's are.
type fanout struct {
	origin  string
	peers   *store.Peers
	log     *slog.Logger
	queue   chan Event
	dropped atomic.Int64
}

// peerBatch is one notification: events of one replica.
type peerBatch struct {
	Origin string      `json:"origin"`
	Events []peerEvent `json:"events"`
}

// peerEvent is an Event with the event policy subscribers are filtered by.
type peerEvent struct {
	Event
	Policy workflow.EventPolicy `json:"policy"`
}

func newFanout(ctx context.Context, s *Server, peers *store.Peers, origin string) (*fanout, error) {
	f := &fanout{origin: origin, peers: peers, log: s.log, queue: make(chan Event, 4096)}
	err := peers.Listen(ctx, eventsChannel, func(payload string) {
		var b peerBatch
		if err := json.Unmarshal([]byte(payload), &b); err != nil {
			s.log.Warn("runner: events from another runner are not valid JSON; ignored", "err", err)
			return
		}
		if b.Origin == origin {
			return // ours, already delivered here
		}
		for _, pe := range b.Events {
			e := pe.Event
			e.Policy = pe.Policy
			s.events.publish(e)
		}
	})
	if err != nil {
		return nil, err
	}
	go f.run(ctx)
	return f, nil
}

func (f *fanout) send(e Event) {
	select {
	case f.queue <- e:
	default:
		f.dropped.Add(1)
	}
}

func (f *fanout) run(ctx context.Context) {
	for {
		var first Event
		select {
		case <-ctx.Done():
			return
		case first = <-f.queue:
		}
		// Gather what comes within fanoutWindow: under load a handful of
		// notifications carry hundreds of events.
		batch := []Event{first}
		window := time.NewTimer(fanoutWindow)
	more:
		for len(batch) < cap(f.queue) {
			select {
			case e := <-f.queue:
				batch = append(batch, e)
			case <-window.C:
				break more
			case <-ctx.Done():
				window.Stop()
				return
			}
		}
		window.Stop()
		f.notify(ctx, batch)
	}
}

// notify sends batch in as few notifications as fit the payload limit,
// each event marshalled once (a peerBatch: {"origin", "events"}).
func (f *fanout) notify(ctx context.Context, batch []Event) {
	head, _ := json.Marshal(f.origin) // a string always marshals
	head = append(append([]byte(`{"origin":`), head...), `,"events":[`...)
	msg, n := head, 0
	flush := func() {
		if n == 0 {
			return
		}
		err := f.peers.Notify(ctx, eventsChannel, string(append(msg, "]}"...)))
		if err != nil && ctx.Err() == nil {
			f.dropped.Add(int64(n))
			f.log.Warn("runner: sending events to the other runners failed; they were dropped for them", "events", n, "err", err)
		}
		msg, n = append(msg[:0], head...), 0
	}
	for _, e := range batch {
		one, err := json.Marshal(peerEvent{Event: e, Policy: e.Policy})
		if err != nil || len(head)+len(one)+2 > maxNotify {
			f.dropped.Add(1)
			continue
		}
		if len(msg)+1+len(one)+2 > maxNotify {
			flush()
		}
		if n > 0 {
			msg = append(msg, ',')
		}
		msg, n = append(msg, one...), n+1
	}
	flush()
}
