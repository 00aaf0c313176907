package integration

// Hangs (gray failures): a process that stops answering without dying — a GC or VM pause, a
// frozen container — made with SIGSTOP and undone with SIGCONT, under the same load and with the
// same per-client, per-direction checks as the kill tests (fault_kill_test.go). The clients ask for
// heartbeats and reach the edges through a stand-in load balancer that health-checks /readyz every
// 250 ms. Each test logs RECOVERY lines and a TARGET line (longest client silence against the
// target of issue 12: 5 s for a role, the cluster's election time + 2 s for a NATS node).
//
// These run only with ICWS_FAULT_GRAY=1 (a step of their own in .ci/run).

import (
	"strings"
	"testing"
	"time"

	"github.com/icws/icws/bus"
)

// roleSilenceTarget is the longest silence a resumable client may see when an edge, submitter or
// poller hangs, dies or is cut off.
const roleSilenceTarget = 5 * time.Second

// natsElectionSlack is what a NATS node's failure may cost beyond the cluster's own election.
const natsElectionSlack = 2 * time.Second

// TestFaultHangEdge: freeze one edge for 15 s. Its clients see no heartbeat for 2 × 1 s, give the
// connection up and resume on the other edge (the balancer has taken the frozen one out); when the
// edge thaws it finds its sessions taken over and relays nothing twice.
func TestFaultHangEdge(t *testing.T) {
	requireGrayFaults(t)
	d := startFaultDeployment(t, ReplicaOptions{}, nil)
	run := startFaultClients(t, d, faultClients, faultClientOptions{Balancer: true})
	onVictim := run.clientsOnEdge(0)
	if len(onVictim) == 0 || len(onVictim) == len(run.clients) {
		t.Fatalf("%d of %d clients on %s: not spread over both edges", len(onVictim), len(run.clients), d.Edges[0].Name)
	}
	victim := d.Edges[0]
	var thawed <-chan struct{}
	hungAt := run.runWithKill(defaultFaultTraffic, func() { thawed = faultHang(t, victim.Proc, 15*time.Second) })
	run.verify(90 * time.Second)
	faultCheckLeft(t, run, onVictim, victim.Name)
	run.logRecovery("edge hang (all traffic)", hungAt)
	sub := &faultRun{t: t, d: d, clients: onVictim}
	rc := sub.logRecovery("edge hang, clients of the frozen edge (heartbeat silence → resume on the other edge)", hungAt)
	sub.target("edge hang", rc, roleSilenceTarget,
		"detection is 2 × ICWS_HEARTBEAT_INTERVAL (2 s) after the last frame, then the balancer must have taken the frozen edge out (2 checks, up to 2.5 s after the freeze); the resume does not wait for the frozen edge (its lease shows a missed renewal) but its JetStream round trips and the replay on a loaded machine add the rest")
	faultAfterThaw(t, run, thawed, &victim.Role)
}

// faultCheckLeft checks that every client of a failed edge resumed at least once (it may be back
// on that edge by now, once it recovered) and logs how many did so on the other edge first.
func faultCheckLeft(t *testing.T, run *faultRun, clients []*faultClient, edge string) {
	t.Helper()
	for _, c := range clients {
		if c.conn.Resumes() < 1 {
			run.dumpClientLog(c)
			t.Fatalf("client %d of %s never resumed", c.idx, edge)
		}
	}
	back := 0
	for _, c := range clients {
		if c.dialer.current.Load() == 0 {
			back++
		}
	}
	t.Logf("all %d clients of %s resumed; %d of them are on it again now", len(clients), edge, back)
}

// faultAfterThaw waits for the thawed process to serve again and checks every client once more:
// nothing the process held while frozen may arrive late as a duplicate.
func faultAfterThaw(t *testing.T, run *faultRun, thawed <-chan struct{}, role *Role) {
	t.Helper()
	select {
	case <-thawed:
	case <-time.After(2 * time.Minute):
		t.Fatal("process not thawed")
	}
	thawedAt := time.Now()
	waitReady(t, role.AdminURL, role.Proc)
	t.Logf("%s ready again %s after SIGCONT", role.Name, time.Since(thawedAt).Round(time.Millisecond))
	run.verify(30 * time.Second)
}

// TestFaultHangSubmitter: freeze a submitter for 10 s while every client has a burst in flight
// (updates take 400 ms at the replica). Its partition leases expire and the other submitter takes
// them over from the consumers' ack floors; when it thaws, whatever it was submitting is a duplicate
// at the IC.
func TestFaultHangSubmitter(t *testing.T) {
	requireGrayFaults(t)
	d := startFaultDeployment(t, ReplicaOptions{UpdateLatency: 400 * time.Millisecond}, nil)
	run := startFaultClients(t, d, faultClients, faultClientOptions{Balancer: true})
	owners, partitions := faultWaitPartitionsSplit(t, d, 20*time.Second)
	victim := d.Submitters[0]
	var affected []*faultClient
	for _, c := range run.clients {
		if owners[bus.Partition(d.Replica.CanisterID, c.key.Token(), partitions)] == victim.Name {
			affected = append(affected, c)
		}
	}
	if len(affected) == 0 {
		t.Fatalf("no client in %s's partitions", victim.Name)
	}
	t.Logf("%s owns the partitions of %d of %d clients", victim.Name, len(affected), len(run.clients))
	traffic := defaultFaultTraffic
	traffic.KillAfter = 5
	var thawed <-chan struct{}
	hungAt := run.runWithKill(traffic, func() { thawed = faultHang(t, victim.Proc, 10*time.Second) })
	run.verify(90 * time.Second)
	run.logRecovery("submitter hang (all traffic)", hungAt)
	sub := &faultRun{t: t, d: d, clients: affected}
	rc := sub.logRecovery("submitter hang, clients of the frozen submitter (partition takeover)", hungAt)
	sub.target("submitter hang", rc, roleSilenceTarget,
		"the partitions move when their leases expire (ICWS_SUBMIT_LEASE_TTL 3 s plus the other submitter's next lease scan), then the envelope in flight is submitted again and waits for its 400 ms update")
	faultAfterThaw(t, run, thawed, victim)
}

// TestFaultHangActivePoller: freeze the poller holding the canister's lease for 10 s; the standby
// takes over when the lease expires, and the thawed poller's late publishes are duplicates.
func TestFaultHangActivePoller(t *testing.T) {
	requireGrayFaults(t)
	d := startFaultDeployment(t, ReplicaOptions{}, nil)
	run := startFaultClients(t, d, faultClients, faultClientOptions{Balancer: true})
	victim := faultActivePoller(t, d.Pollers, d.Replica.CanisterID, 20*time.Second)
	t.Logf("active poller: %s", d.Pollers[victim].Name)
	var thawed <-chan struct{}
	hungAt := run.runWithKill(defaultFaultTraffic, func() { thawed = faultHang(t, d.Pollers[victim].Proc, 10*time.Second) })
	run.verify(90 * time.Second)
	rc := run.logRecovery("active poller hang (standby takeover)", hungAt)
	run.target("poller hang", rc, roleSilenceTarget,
		"the standby takes over when the lease expires (ICWS_POLL_LEASE_TTL 2 s) and its next lease check; the first poll then fetches everything queued meanwhile")
	faultAfterThaw(t, run, thawed, d.Pollers[victim])
}

// TestFaultHangNATSLeader: freeze the NATS node leading ICWS_OUT for 8 s. The other two elect new
// leaders for every group it led; processes connected to it notice the silence (NATS pings every
// 1 s, the edge's own probe every 300 ms) and reconnect to another node. The target is the
// cluster's own election time (measured here from the LEADER_ELECTED advisories) + 2 s.
func TestFaultHangNATSLeader(t *testing.T) {
	requireGrayFaults(t)
	d := startFaultDeployment(t, ReplicaOptions{}, nil)
	run := startFaultClients(t, d, faultClients, faultClientOptions{Balancer: true})
	leaders := faultStreamLeaders(t, d)
	victimName := leaders[bus.StreamOut]
	victim := d.NATS.Index(victimName)
	if victim < 0 {
		t.Fatalf("ICWS_OUT leader %q is not a test node", victimName)
	}
	led := groupsLedBy(faultRaftLeaders(t, d.NATS, -1), victimName)
	t.Logf("freezing NATS node %s, leader of %s", victimName, strings.Join(led, ", "))
	elections := watchFaultElections(t, d.NATS, victim)
	var thawed <-chan struct{}
	hungAt := run.runWithKill(defaultFaultTraffic, func() { thawed = faultHang(t, d.NATS.Nodes[victim].Proc, 8*time.Second) })
	election, detail := elections.electionTime(t, led, hungAt, 30*time.Second)
	t.Logf("ELECTION after freezing %s: %s (%s)", victimName, election.Round(time.Millisecond), detail)
	run.verify(90 * time.Second)
	rc := run.logRecovery("NATS leader hang ("+victimName+")", hungAt)
	run.logRoleWarnings()
	run.target("NATS leader hang", rc, election+natsElectionSlack,
		"see the ELECTION line: groups elect one after another (each follower waits a random 4-9 s), and a client whose path crosses the last group to elect waits for it, then for the edge's retry interval (≤ 500 ms)")
	select {
	case <-thawed:
	case <-time.After(2 * time.Minute):
		t.Fatal("NATS node not thawed")
	}
	d.NATS.WaitJetStream(60 * time.Second)
	run.verify(30 * time.Second)
}
