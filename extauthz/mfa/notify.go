package mfa

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Event is one enrolment event, as logged and as posted to a tenant's
// mfa.notify_url. It never carries a secret or a code.
type Event struct {
	Event   string    `json:"event"` // code_issued, enrolment_started, enrolment_completed
	Tenant  string    `json:"tenant"`
	User    string    `json:"user"`              // the username as typed or given
	Account string    `json:"account,omitempty"` // the directory entry (DN)
	Via     string    `json:"via,omitempty"`     // self (password alone) or code (admin-issued)
	By      string    `json:"by,omitempty"`      // the admin who issued a code
	Addr    string    `json:"addr,omitempty"`    // the client address
	Time    time.Time `json:"time"`
}

// Event names.
const (
	EventCodeIssued         = "code_issued"
	EventEnrolmentStarted   = "enrolment_started"
	EventEnrolmentCompleted = "enrolment_completed"
)

// Notifier posts events to webhook URLs in the background: a bounded
// queue (a full queue drops the event and reports it), one worker, each
// post bounded by Timeout and retried with backoff up to Attempts times.
// A Check or login never waits for it.
type Notifier struct {
	client   *http.Client
	attempts int
	backoff  time.Duration
	failed   func(ev Event, err error) // after the last attempt, or when dropped

	queue chan notice
	stop  context.CancelFunc
	done  chan struct{}
	once  sync.Once
}

type notice struct {
	url string
	ev  Event
}

// NotifierOptions tune a Notifier; zero fields take the defaults.
type NotifierOptions struct {
	Timeout  time.Duration // per post (default 5s)
	Attempts int           // default 3
	Backoff  time.Duration // before the 2nd attempt, doubling (default 1s)
	Queue    int           // default 256
	// Failed is told of every event not delivered (required).
	Failed func(ev Event, err error)
}

// NewNotifier starts a notifier's worker; Close stops it.
func NewNotifier(o NotifierOptions) *Notifier {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.Queue <= 0 {
		o.Queue = 256
	}
	ctx, stop := context.WithCancel(context.Background())
	n := &Notifier{client: &http.Client{Timeout: o.Timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		attempts: o.Attempts, backoff: o.Backoff, failed: o.Failed,
		queue: make(chan notice, o.Queue), stop: stop, done: make(chan struct{})}
	go n.run(ctx)
	return n
}

// Notify queues ev for url; it never blocks.
func (n *Notifier) Notify(url string, ev Event) {
	select {
	case n.queue <- notice{url, ev}:
	default:
		n.failed(ev, fmt.Errorf("mfa: notify queue full: event dropped"))
	}
}

// Close stops the worker; queued events are not sent.
func (n *Notifier) Close() {
	n.once.Do(func() {
		n.stop()
		<-n.done
	})
}

func (n *Notifier) run(ctx context.Context) {
	defer close(n.done)
	for {
		select {
		case <-ctx.Done():
			return
		case no := <-n.queue:
			if err := n.deliver(ctx, no); err != nil && ctx.Err() == nil {
				n.failed(no.ev, err)
			}
		}
	}
}

func (n *Notifier) deliver(ctx context.Context, no notice) error {
	body, err := json.Marshal(no.ev)
	if err != nil {
		return err
	}
	wait := n.backoff
	for i := 1; ; i++ {
		err = n.post(ctx, no.url, body)
		if err == nil || i == n.attempts {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait *= 2
	}
}

func (n *Notifier) post(ctx context.Context, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "kailash-mfa-notify")
	resp, err := n.client.Do(req)
	if err != nil {
		return fmt.Errorf("mfa: notify: %w", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("mfa: notify: %s answered %d", req.URL.Redacted(), resp.StatusCode)
	}
	return nil
}
