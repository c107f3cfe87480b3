package xds

import (
	"fmt"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func testTracker() *tracker {
	m := newMetrics(prometheus.NewRegistry())
	t := newTracker(m.acks, m.nacks)
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	t.now = func() time.Time { return at }
	return t
}

func TestTrackerACK(t *testing.T) {
	tr := testTracker()
	tr.opened(1)
	// The first request subscribes (no nonce): the node is connected, nothing acked.
	tr.request(1, "n1", "edge", resource.ClusterType, "", "")
	if e := tr.envoys("v1"); e.Count != 1 || e.List[0].NodeID != "n1" || e.List[0].Cluster != "edge" || e.List[0].AckedVersion != "" || e.List[0].InSync {
		t.Fatalf("after subscribe: %+v", e)
	}
	tr.sent(1, resource.ClusterType, "1", "v1")
	tr.sent(1, resource.ListenerType, "2", "v1")
	// Later requests omit the node: the stream's node is used.
	tr.request(1, "", "", resource.ClusterType, "1", "")
	tr.request(1, "", "", resource.ListenerType, "2", "")
	e := tr.envoys("v1").List[0]
	if e.AckedVersion != "v1" || !e.InSync || e.ACKs != 2 || e.Acked[resource.ListenerType] != "v1" || e.Streams != 1 {
		t.Fatalf("after ACKs: %+v", e)
	}
	if n := testutil.ToFloat64(tr.acks.WithLabelValues("n1", resource.ClusterType)); n != 1 {
		t.Errorf("kailash_xds_acks_total{n1,cluster} = %v, want 1", n)
	}
	// A newer snapshot not yet acked: not in sync, the acked version stays.
	if e := tr.envoys("v2").List[0]; e.InSync || e.AckedVersion != "v1" {
		t.Errorf("against v2: %+v", e)
	}
	// An answer naming a nonce this stream was never sent is no ACK.
	tr.request(1, "", "", resource.ClusterType, "99", "")
	if e := tr.envoys("v1").List[0]; e.ACKs != 2 {
		t.Errorf("unknown nonce counted: %+v", e)
	}
}

// In sync: the latest ACK is of the version served and nothing awaits an
// answer. Delta xDS sends only the types that changed, so per-type
// versions may differ.
func TestTrackerInSync(t *testing.T) {
	tr := testTracker()
	tr.opened(1)
	tr.request(1, "n1", "", resource.ClusterType, "", "")
	tr.sent(1, resource.ClusterType, "1", "v1")
	tr.sent(1, resource.ListenerType, "2", "v1")
	tr.request(1, "", "", resource.ClusterType, "1", "")
	if e := tr.envoys("v1").List[0]; e.InSync {
		t.Fatalf("in sync with the listeners unanswered: %+v", e)
	}
	tr.request(1, "", "", resource.ListenerType, "2", "")
	if e := tr.envoys("v1").List[0]; !e.InSync {
		t.Fatalf("not in sync after every answer: %+v", e)
	}
	// v2 changes only the clusters.
	tr.sent(1, resource.ClusterType, "3", "v2")
	if e := tr.envoys("v2").List[0]; e.InSync {
		t.Fatalf("in sync before acking v2: %+v", e)
	}
	tr.request(1, "", "", resource.ClusterType, "3", "")
	if e := tr.envoys("v2").List[0]; !e.InSync || e.Acked[resource.ListenerType] != "v1" || e.AckedVersion != "v2" {
		t.Fatalf("v2 acked (listeners unchanged at v1): %+v", e)
	}
	// A NACK puts it out of sync until that type is acked again.
	tr.sent(1, resource.ListenerType, "4", "v3")
	tr.request(1, "", "", resource.ListenerType, "4", "bad")
	tr.sent(1, resource.ClusterType, "5", "v3")
	tr.request(1, "", "", resource.ClusterType, "5", "")
	if e := tr.envoys("v3").List[0]; e.InSync {
		t.Fatalf("in sync with the listeners refused: %+v", e)
	}
	tr.sent(1, resource.ListenerType, "6", "v4")
	tr.sent(1, resource.ClusterType, "7", "v4")
	tr.request(1, "", "", resource.ListenerType, "6", "")
	tr.request(1, "", "", resource.ClusterType, "7", "")
	if e := tr.envoys("v4").List[0]; !e.InSync || e.LastNACK == nil {
		t.Fatalf("fixed config acked: %+v (the last NACK stays listed)", e)
	}
}

func TestTrackerNACK(t *testing.T) {
	tr := testTracker()
	tr.opened(7)
	tr.request(7, "n1", "", resource.ListenerType, "", "")
	tr.sent(7, resource.ListenerType, "1", "v1")
	tr.request(7, "", "", resource.ListenerType, "1", "")
	tr.sent(7, resource.ListenerType, "2", "v2")
	if got := tr.request(7, "", "", resource.ListenerType, "2", "listener 'x': bad port"); got != "v2" {
		t.Errorf("refused version %q, want v2", got)
	}
	e := tr.envoys("v2").List[0]
	if e.NACKs != 1 || e.LastNACK == nil || e.LastNACK.Message != "listener 'x': bad port" || e.LastNACK.Version != "v2" ||
		e.LastNACK.TypeURL != resource.ListenerType || !e.LastNACK.At.Equal(tr.now()) {
		t.Fatalf("NACK: %+v %+v", e, e.LastNACK)
	}
	if e.AckedVersion != "v1" || e.InSync {
		t.Errorf("after the NACK Envoy still holds v1: %+v", e)
	}
	if n := testutil.ToFloat64(tr.nacks.WithLabelValues("n1", resource.ListenerType)); n != 1 {
		t.Errorf("kailash_xds_nacks_total{n1,listener} = %v, want 1", n)
	}
	// A long message is cut.
	tr.sent(7, resource.ListenerType, "3", "v3")
	long := make([]byte, 5000)
	for i := range long {
		long[i] = 'x'
	}
	tr.request(7, "", "", resource.ListenerType, "3", string(long))
	if m := tr.envoys("v3").List[0].LastNACK.Message; len(m) > 1100 {
		t.Errorf("NACK message of %d bytes kept", len(m))
	}
}

func TestTrackerDisconnect(t *testing.T) {
	tr := testTracker()
	// Two streams of one node (e.g. separate CDS and LDS streams), one of another.
	for id, node := range map[int64]string{1: "a", 2: "a", 3: "b"} {
		tr.opened(id)
		tr.request(id, node, "", resource.ClusterType, "", "")
	}
	if e := tr.envoys(""); e.Count != 2 || e.List[0].NodeID != "a" || e.List[0].Streams != 2 || e.List[1].NodeID != "b" {
		t.Fatalf("connected: %+v", e)
	}
	tr.closed(1)
	if e := tr.envoys(""); e.Count != 2 || e.List[0].Streams != 1 {
		t.Fatalf("after one of a's streams closed: %+v", e)
	}
	tr.closed(2)
	tr.closed(2) // closed twice: no effect
	if e := tr.envoys(""); e.Count != 1 || e.List[0].NodeID != "b" {
		t.Fatalf("after a disconnected: %+v", e)
	}
	tr.closed(3)
	if e := tr.envoys(""); e.Count != 0 || len(e.List) != 0 || len(tr.streams) != 0 {
		t.Fatalf("after all closed: %+v, %d streams", e, len(tr.streams))
	}
	// A stream that reconnects starts afresh.
	tr.opened(4)
	tr.request(4, "a", "", resource.ClusterType, "", "")
	if e := tr.envoys("").List[0]; e.ACKs != 0 || e.Streams != 1 {
		t.Errorf("reconnected: %+v", e)
	}
}

func TestTrackerBoundsNodes(t *testing.T) {
	tr := testTracker()
	for i := range maxTrackedNodes + 5 {
		id := int64(i)
		tr.opened(id)
		tr.request(id, fmt.Sprintf("node-%05d", i), "", resource.ClusterType, "", "")
		tr.sent(id, resource.ClusterType, "1", "v1")
		tr.request(id, "", "", resource.ClusterType, "1", "")
	}
	if n := len(tr.nodes); n != maxTrackedNodes {
		t.Errorf("%d nodes tracked, want %d", n, maxTrackedNodes)
	}
	if n := testutil.ToFloat64(tr.acks.WithLabelValues(otherNode, resource.ClusterType)); n != 5 {
		t.Errorf("ACKs of untracked nodes: %v, want 5 under %s", n, otherNode)
	}
	if n := testutil.CollectAndCount(tr.acks); n != maxTrackedNodes+1 {
		t.Errorf("%d ACK series, want %d", n, maxTrackedNodes+1)
	}
	if e := tr.envoys(""); e.Count != maxTrackedNodes || len(e.List) != 500 || !e.Truncated {
		t.Errorf("report: count %d, %d listed, truncated %v", e.Count, len(e.List), e.Truncated)
	}
	// The pending responses of a stream are bounded too.
	tr.opened(-1)
	tr.request(-1, "node-00000", "", resource.ClusterType, "", "")
	for i := range 100 {
		tr.sent(-1, resource.ClusterType, fmt.Sprint(i), "v")
	}
	if n := len(tr.streams[-1].pending[resource.ClusterType]); n != maxPending {
		t.Errorf("%d responses pending, want %d", n, maxPending)
	}
}
