package integration

// Network partitions (gray failures): every process runs in a network namespace of its own
// (netns_harness_test.go) and one link is cut — packets dropped, no reset, no error — for a while
// and then healed, under the same load and with the same per-client, per-direction checks as the
// kill tests. The clients ask for heartbeats and reach the edges through the stand-in load
// balancer. Each test logs RECOVERY lines and a TARGET line.
//
// These need root and iproute2 and run only with ICWS_FAULT_GRAY=1 (a step of their own in
// .ci/run).

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icws/icws/bus"
)

// faultPartition cuts host h off network n now and heals it after d (or at the end of the test);
// the returned channel is closed once healed.
func faultPartition(t *testing.T, h *netHost, n int, d time.Duration) <-chan struct{} {
	healed := make(chan struct{})
	heal := sync.OnceFunc(func() { h.heal(n); close(healed) })
	h.cut(n)
	timer := time.AfterFunc(d, heal)
	t.Cleanup(func() { timer.Stop(); heal() })
	return healed
}

func waitHealed(t *testing.T, healed <-chan struct{}) time.Time {
	t.Helper()
	select {
	case <-healed:
	case <-time.After(2 * time.Minute):
		t.Fatal("partition not healed")
	}
	return time.Now()
}

// TestFaultPartitionEdgeFromNATS: cut one edge off the NATS network for 15 s while its clients
// still reach it. The edge's probe finds NATS silent, it tries the other NATS nodes (also cut off)
// and after ICWS_EDGE_NATS_TIMEOUT closes its clients with 4103; they resume at once on the other
// edge (the balancer sees 503 on the cut edge). Healed, the edge serves again.
func TestFaultPartitionEdgeFromNATS(t *testing.T) {
	requireGrayFaults(t)
	nd := startNetFaultDeployment(t, ReplicaOptions{})
	run := startFaultClients(t, nd.Deployment, faultClients, faultClientOptions{Balancer: true})
	onVictim := run.clientsOnEdge(0)
	if len(onVictim) == 0 || len(onVictim) == len(run.clients) {
		t.Fatalf("%d of %d clients on edge-1: not spread over both edges", len(onVictim), len(run.clients))
	}
	victim := nd.Edges[0]
	var healed <-chan struct{}
	cutAt := run.runWithKill(defaultFaultTraffic, func() { healed = faultPartition(t, nd.hosts[victim.Name], netBack, 15*time.Second) })
	run.verify(90 * time.Second)
	faultCheckLeft(t, run, onVictim, victim.Name)
	run.logRecovery("edge cut off from NATS (all traffic)", cutAt)
	sub := &faultRun{t: t, d: nd.Deployment, clients: onVictim}
	rc := sub.logRecovery("edge cut off from NATS, its clients (4103 → resume on the other edge)", cutAt)
	if lines := faultLogLines(victim.Proc, 6, "shedding clients", "NATS server not answering", "reachable again"); len(lines) > 0 {
		t.Logf("%s:\n  %s", victim.Name, strings.Join(lines, "\n  "))
	}
	sub.target("edge cut off from NATS", rc, roleSilenceTarget,
		"the edge sheds after ICWS_EDGE_NATS_TIMEOUT (3 s) without an answer from NATS; then its clients resume at once on the other edge, each resume and replay a few JetStream round trips")
	healedAt := waitHealed(t, healed)
	waitReady(t, victim.AdminURL, victim.Proc)
	t.Logf("%s ready again %s after the partition healed", victim.Name, time.Since(healedAt).Round(time.Millisecond))
	run.verify(30 * time.Second)
}

// TestFaultPartitionNATSNode: cut the NATS node leading ICWS_OUT off its two peers for 15 s (the
// processes connected to it still reach it). The other two elect new leaders; the cut-off node
// keeps answering pings but its JetStream goes nowhere: the processes connected to it lose their
// leases to the others and move to another node once their cluster watch has had no JetStream
// answer for ICWS_NATS_JETSTREAM_TIMEOUT. The target is the cluster's own election time + 2 s.
func TestFaultPartitionNATSNode(t *testing.T) {
	requireGrayFaults(t)
	nd := startNetFaultDeployment(t, ReplicaOptions{})
	run := startFaultClients(t, nd.Deployment, faultClients, faultClientOptions{Balancer: true})
	leaders := faultStreamLeaders(t, nd.Deployment)
	victimName := leaders[bus.StreamOut]
	victim := nd.NATS.Index(victimName)
	if victim < 0 {
		t.Fatalf("ICWS_OUT leader %q is not a test node", victimName)
	}
	led := groupsLedBy(faultRaftLeaders(t, nd.NATS, -1), victimName)
	t.Logf("cutting NATS node %s off its peers; it leads %s", victimName, strings.Join(led, ", "))
	t.Logf("connections to %s before the cut: %s", victimName, faultNATSClients(t, nd.NATS.Nodes[victim]))
	elections := watchFaultElections(t, nd.NATS, victim)
	var healed <-chan struct{}
	cutAt := run.runWithKill(defaultFaultTraffic, func() { healed = faultPartition(t, nd.hosts[victimName], netRoutes, 15*time.Second) })
	election, detail := elections.electionTime(t, led, cutAt, 40*time.Second)
	t.Logf("ELECTION after cutting %s off: %s (%s)", victimName, election.Round(time.Millisecond), detail)
	run.verify(90 * time.Second)
	rc := run.logRecovery("NATS node cut off from its peers ("+victimName+")", cutAt)
	run.logRoleWarnings()
	run.target("NATS node cut off from its peers", rc, election+natsElectionSlack,
		"see the ELECTION line; processes connected to the cut-off node see a server that answers but whose JetStream does not: every process moves to another node after ICWS_NATS_JETSTREAM_TIMEOUT (10 s, longer than an election so that elections alone never move it) and loses its leases meanwhile")
	waitHealed(t, healed)
	nd.NATS.WaitJetStream(90 * time.Second)
	run.verify(30 * time.Second)
}

// faultNATSClients names the client connections of a node (from /connz), for the test log.
func faultNATSClients(t *testing.T, n *NATSNode) string {
	var cz struct {
		Connections []struct {
			Name string `json:"name"`
		} `json:"connections"`
	}
	if err := getJSON(n.MonitorURL+"/connz", &cz); err != nil {
		return err.Error()
	}
	var names []string
	for _, c := range cz.Connections {
		names = append(names, c.Name)
	}
	return strings.Join(names, ", ")
}

// TestFaultPartitionSubmitterFromIC: cut one submitter off the IC for 15 s while it still reaches
// NATS. Its IC status probes go unanswered, so after ICWS_SUBMIT_IC_GIVE_UP it gives its partitions
// up (abandoning the calls in flight) and withdraws its liveness lease; the other submitter takes
// them and sends the abandoned envelopes again. Nothing is lost or duplicated, and the cut-off
// submitter takes its share back once the IC answers it again.
func TestFaultPartitionSubmitterFromIC(t *testing.T) {
	requireGrayFaults(t)
	nd := startNetFaultDeployment(t, ReplicaOptions{})
	run := startFaultClients(t, nd.Deployment, faultClients, faultClientOptions{Balancer: true})
	owners, partitions := faultWaitPartitionsSplit(t, nd.Deployment, 20*time.Second)
	victim := nd.Submitters[0]
	var affected []*faultClient
	for _, c := range run.clients {
		if owners[bus.Partition(nd.Replica.CanisterID, c.key.Token(), partitions)] == victim.Name {
			affected = append(affected, c)
		}
	}
	if len(affected) == 0 {
		t.Fatalf("no client in %s's partitions", victim.Name)
	}
	t.Logf("%s owns the partitions of %d of %d clients", victim.Name, len(affected), len(run.clients))
	var healed <-chan struct{}
	cutAt := run.runWithKill(defaultFaultTraffic, func() { healed = faultPartition(t, nd.hosts[victim.Name], netIC, 15*time.Second) })
	run.verify(2 * time.Minute)
	run.logRecovery("submitter cut off from the IC (all traffic)", cutAt)
	sub := &faultRun{t: t, d: nd.Deployment, clients: affected}
	rc := sub.logRecovery("submitter cut off from the IC, its clients", cutAt)
	run.logRoleWarnings()
	sub.target("submitter cut off from the IC", rc, roleSilenceTarget,
		"the cut-off submitter gives its partitions up after ICWS_SUBMIT_IC_GIVE_UP (3 s) without an answer to its status probes (one a second, each waiting 1 s) and the other submitter holds them within 0.1 s; then it creates a consumer per partition from the ack floor and sends the abandoned envelopes again (400 ms updates here)")
	waitHealed(t, healed)
	run.verify(30 * time.Second)
}
