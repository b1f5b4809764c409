package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Crash safety (issue 5, "Proof"): dpsagent is killed with SIGKILL at every
// kill point of provisioning and of renewal (each fsync, rename, directory
// fsync and removal of the state store, and each TPM command), and at random
// moments of both. After every kill the state directory must hold the old or
// the new identity, whole and usable; after every restart the device must be
// connected with the identity the manifest names, and the directory must hold
// nothing else: no temporary file, no orphaned key blob.
//
// The certificates live 10 minutes, so no renewal falls due by itself during
// the test: renewals are asked for with SIGHUP, which makes the kill points of
// a renewal the same in every run (a certificate about to expire would take
// the provisioning path instead, and a renewal falling due during the checks
// would race them).
const crashLifetime = 10 * time.Minute

// crashWorkers run at once, each with its own swtpm and registration ID:
// most of a run is spent waiting for DPS's retry-after, not computing.
const crashWorkers = 4

// crashPlan is what the clean runs taught: the kill points of a provisioning
// (from a fresh state) and of a renewal (from the key creation on), the
// positions of their manifest commits, and how long each took.
type crashPlan struct {
	provisioning []string
	renewal      []string
	// 1-based positions of "store:rename:state.json": the provisioning's
	// commit, the renewal's staging of next and its promotion to current.
	provisioningCommit, renewalStage, renewalPromote int
	provisioningTook, renewalTook                    time.Duration
}

func TestCrashKillPoints(t *testing.T) {
	lab := crashNewLab(t, crashLifetime)
	rigs := make([]*crashRig, crashWorkers)
	for i := range rigs {
		rigs[i] = lab.newRig(t, i+1)
	}
	plan := crashLearn(t, rigs[0])
	t.Logf("provisioning kill points (%d): %s", len(plan.provisioning), crashNames(plan.provisioning))
	t.Logf("renewal kill points (%d): %s", len(plan.renewal), crashNames(plan.renewal))

	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	jobs := crashJobs(plan, rng)
	queue := make(chan crashJob, len(jobs))
	for _, j := range jobs {
		queue <- j
	}
	close(queue)

	start := time.Now()
	var wg sync.WaitGroup
	for i, r := range rigs {
		wg.Go(func() { r.work(t, plan, queue, rand.New(rand.NewPCG(seed, uint64(i+1)))) })
	}
	wg.Wait()
	if left := len(queue); left > 0 {
		t.Errorf("%d of %d runs were not made: the workers gave up", left, len(jobs))
	}
	t.Logf("%d runs on %d workers in %s", len(jobs), crashWorkers, time.Since(start).Round(time.Second))
	t.Log(lab.tally)
}

// crashMaxFailures stops the workers early: after that many, more runs would
// only repeat the news, a minute each.
const crashMaxFailures = 5

// work runs jobs from queue on r until it is empty or too many failed.
func (r *crashRig) work(t *testing.T, plan crashPlan, queue <-chan crashJob, rng *rand.Rand) {
	if r.dev == nil {
		if _, _, err := r.provisionCleanly(false); err != nil {
			t.Errorf("%s: setting up: %v", r.regID, err)
			r.lab.tally.failed()
			return
		}
	}
	for j := range queue {
		if r.lab.tally.failedRuns() >= crashMaxFailures {
			return
		}
		if err := j.run(r, plan, rng); err != nil {
			t.Errorf("%s, %s: %v", r.regID, j, err)
			r.lab.tally.failed()
			// Start the next run from a known state.
			if _, _, err := r.provisionCleanly(false); err != nil {
				t.Errorf("%s: recovering after a failed run: %v", r.regID, err)
				return
			}
		}
	}
}

func crashLearn(t *testing.T, r *crashRig) crashPlan {
	t.Helper()
	var plan crashPlan
	var err error
	plan.provisioning, plan.provisioningTook, err = r.provisionCleanly(true)
	if err != nil {
		t.Fatalf("clean provisioning run: %v", err)
	}
	rn, err := r.renewCleanly()
	if err != nil {
		t.Fatalf("clean renewal run: %v", err)
	}
	plan.renewal, plan.renewalTook = rn.sequence, rn.took

	commits := crashPositions(plan.provisioning, "store:rename:state.json")
	if len(commits) != 1 {
		t.Fatalf("a provisioning commits the manifest %d times, want once: %s", len(commits), crashNames(plan.provisioning))
	}
	plan.provisioningCommit = commits[0]
	commits = crashPositions(plan.renewal, "store:rename:state.json")
	if len(commits) != 2 {
		t.Fatalf("a renewal commits the manifest %d times, want twice (stage next, promote it): %s", len(commits), crashNames(plan.renewal))
	}
	plan.renewalStage, plan.renewalPromote = commits[0], commits[1]
	if plan.renewal[0] != "tpm:Create" {
		t.Fatalf("the renewal's kill points start with %s, want tpm:Create", plan.renewal[0])
	}
	return plan
}

// crashPositions are the 1-based positions of name in seq.
func crashPositions(seq []string, name string) []int {
	var out []int
	for i, s := range seq {
		if s == name {
			out = append(out, i+1)
		}
	}
	return out
}

func crashNames(seq []string) string {
	kinds := make([]string, len(seq))
	for i, s := range seq {
		kinds[i] = strconv.Itoa(i+1) + " " + crashStepKind(s)
	}
	return strings.Join(kinds, ", ")
}

// provisionCleanly provisions a fresh device and returns the time to a
// settled state and, if traced, the kill points it passed.
func (r *crashRig) provisionCleanly(traced bool) ([]string, time.Duration, error) {
	if err := crashFlushTransients(r.tpm); err != nil {
		return nil, 0, err
	}
	if err := r.freshDevice(); err != nil {
		return nil, 0, err
	}
	var env []string
	trace := r.file("provision.trace")
	if traced {
		env = append(env, "DPSAGENT_KILL_TRACE="+trace)
	}
	a, err := r.start(env...)
	if err != nil {
		return nil, 0, err
	}
	if _, err := r.waitSettled(a, "a clean provisioning"); err != nil {
		a.kill()
		return nil, 0, fmt.Errorf("%w\nagent output:\n%s", err, a.tail())
	}
	took := time.Since(a.started)
	var seq []string
	if traced {
		if seq, err = crashReadSequence(trace); err != nil {
			a.kill()
			return nil, 0, err
		}
	}
	if err := a.stop(); err != nil {
		return nil, 0, fmt.Errorf("%w\nagent output:\n%s", err, a.tail())
	}
	return seq, took, nil
}

// crashJob is one run: a kill at kill point k of a provisioning or a
// renewal, or a kill at a random moment of one.
type crashJob struct {
	renewal bool
	k       int // 0: a random moment
}

func (j crashJob) String() string {
	what := "provisioning"
	if j.renewal {
		what = "renewal"
	}
	if j.k == 0 {
		return "kill at a random moment of a " + what
	}
	return fmt.Sprintf("kill at kill point %d of a %s", j.k, what)
}

func (j crashJob) scenario() string {
	s := "provisioning"
	if j.renewal {
		s = "renewal"
	}
	if j.k == 0 {
		s = "random " + s
	}
	return s
}

// crashJobs is every kill point of both sequences (several rounds under
// DPSAGENT_SOAK=1) and random kills, at least 30 runs in all (300 in a
// soak), shuffled so that the workers share the kinds.
func crashJobs(plan crashPlan, rng *rand.Rand) []crashJob {
	rounds, runs := 1, 30
	if os.Getenv("DPSAGENT_SOAK") == "1" {
		rounds, runs = 4, 300
	}
	var jobs []crashJob
	for range rounds {
		for k := range plan.provisioning {
			jobs = append(jobs, crashJob{k: k + 1})
		}
		for k := range plan.renewal {
			jobs = append(jobs, crashJob{renewal: true, k: k + 1})
		}
	}
	random := max(runs-len(jobs), 8*rounds)
	for i := range random {
		jobs = append(jobs, crashJob{renewal: i%2 == 1})
	}
	rng.Shuffle(len(jobs), func(i, k int) { jobs[i], jobs[k] = jobs[k], jobs[i] })
	return jobs
}

func (j crashJob) run(r *crashRig, plan crashPlan, rng *rand.Rand) error {
	r.lab.tally.count("runs: "+j.scenario(), 1)
	// Every run starts with nothing loaded in the TPM, as after a power cut,
	// so its kill points are those of the clean run; what the kill leaves
	// loaded is the restart's to cope with.
	if err := crashFlushTransients(r.tpm); err != nil {
		return err
	}
	switch {
	case j.k == 0:
		return r.randomKill(plan, j.renewal, rng)
	case j.renewal:
		return r.renewalKill(plan, j.k)
	}
	return r.provisioningKill(plan, j.k)
}

// awaitKill waits for the agent to stop itself at kill point k and checks it
// died by SIGKILL at the step the clean run had at that position.
func (r *crashRig) awaitKill(a *crashAgent, k int, log, want string) error {
	if err := a.waitExit(crashLimit); err != nil {
		return fmt.Errorf("%w\nagent output:\n%s", err, a.tail())
	}
	if ok, how := a.diedBySIGKILL(); !ok {
		return fmt.Errorf("dpsagent run ended with %s before kill point %d (%s), want SIGKILL there\nagent output:\n%s", how, k, want, a.tail())
	}
	hit, err := crashReadKillPoints(log)
	if err != nil {
		return err
	}
	if len(hit) != 1 || hit[0].N != k || crashStepKind(hit[0].Name) != crashStepKind(want) {
		return fmt.Errorf("the kill log says %v, want kill point %d at %s as in the clean run\nagent output:\n%s", hit, k, crashStepKind(want), a.tail())
	}
	return nil
}

// provisioningKill kills a provisioning from a fresh state at kill point k.
// Until the manifest's rename nothing is committed and the restarted agent
// registers; from then on it uses the identity committed.
func (r *crashRig) provisioningKill(plan crashPlan, k int) error {
	if err := r.freshDevice(); err != nil {
		return err
	}
	want := plan.provisioning[k-1]
	log := r.file("kill.log")
	a, err := r.start("DPSAGENT_KILL_AT="+strconv.Itoa(k), "DPSAGENT_KILL_LOG="+log)
	if err != nil {
		return err
	}
	if err := r.awaitKill(a, k, log, want); err != nil {
		return err
	}
	r.lab.tally.step("provisioning", fmt.Sprintf("%02d %s", k, want))
	m, stored, err := r.checkAfterKill()
	if err != nil {
		return err
	}
	if committed := k > plan.provisioningCommit; committed != (m.Current != nil) {
		return fmt.Errorf("after a kill at %s the manifest holds %s; the commit point is kill point %d (%s)", crashStepKind(want), jsonText(m), plan.provisioningCommit, plan.provisioning[plan.provisioningCommit-1])
	}
	if _, err := r.restartAndCheck(m, stored); err != nil {
		return err
	}
	if m.Current != nil {
		r.lab.tally.count("outcome: provisioning: restart used the identity committed before the kill", 1)
	} else {
		r.lab.tally.count("outcome: provisioning: nothing committed; restart registered anew", 1)
	}
	return nil
}

// renewalKill kills a renewal (asked for with SIGHUP once connected) at its
// kill point k. Up to the promotion's rename the old identity is current
// (and between the staging's rename and that one the new is staged as next);
// after it the new one is, and the restart uses it.
func (r *crashRig) renewalKill(plan crashPlan, k int) error {
	if err := r.refreshIfAging(); err != nil {
		return err
	}
	before, err := r.dev.readState()
	if err != nil || before.Current == nil {
		return fmt.Errorf("no identity to renew: %s (%v)", jsonText(before), err)
	}
	old := before.Current.Serial
	want := plan.renewal[k-1]
	log := r.file(fmt.Sprintf("kill-%d.log", time.Now().UnixNano()))
	a, err := r.start("DPSAGENT_KILL_FROM=tpm:Create", "DPSAGENT_KILL_AT="+strconv.Itoa(k), "DPSAGENT_KILL_LOG="+log)
	if err != nil {
		return err
	}
	if _, err := r.waitSettled(a, "the agent to connect before the renewal"); err != nil {
		a.kill()
		return fmt.Errorf("%w\nagent output:\n%s", err, a.tail())
	}
	if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		a.kill()
		return err
	}
	if err := r.awaitKill(a, k, log, want); err != nil {
		return err
	}
	r.lab.tally.step("renewal", fmt.Sprintf("%02d %s", k, want))
	m, stored, err := r.checkAfterKill()
	if err != nil {
		return err
	}
	wantOld := k <= plan.renewalPromote
	wantNext := k > plan.renewalStage && k <= plan.renewalPromote
	if m.Current == nil || strings.EqualFold(m.Current.Serial, old) != wantOld || (m.Next != nil) != wantNext {
		return fmt.Errorf("after a kill at %s (old serial %s) the manifest holds %s; want the old identity current up to kill point %d and a staged next after kill point %d",
			crashStepKind(want), old, jsonText(m), plan.renewalPromote, plan.renewalStage)
	}
	serial, err := r.restartAndCheck(m, stored)
	if err != nil {
		return err
	}
	switch {
	case strings.EqualFold(serial, old) && m.Next != nil:
		r.lab.tally.count("outcome: renewal: restart dropped the staged next, used the old identity", 1)
	case strings.EqualFold(serial, old):
		r.lab.tally.count("outcome: renewal: restart used the old identity", 1)
	default:
		r.lab.tally.count("outcome: renewal: restart used the new identity", 1)
	}
	return nil
}

// randomKill kills a provisioning (from a fresh state) or a renewal at a
// random moment within the time a clean one took (and a little after), then
// checks the same as after a kill point. The trace says the last kill point
// reached.
func (r *crashRig) randomKill(plan crashPlan, renewal bool, rng *rand.Rand) error {
	scenario, took := "random provisioning", plan.provisioningTook
	if renewal {
		scenario, took = "random renewal", plan.renewalTook
		if err := r.refreshIfAging(); err != nil {
			return err
		}
	} else if err := r.freshDevice(); err != nil {
		return err
	}
	before, err := r.dev.readState()
	if err != nil {
		return err
	}
	trace := r.file(fmt.Sprintf("random-%d.trace", time.Now().UnixNano()))
	env := []string{"DPSAGENT_KILL_TRACE=" + trace}
	if renewal {
		env = append(env, "DPSAGENT_KILL_FROM=tpm:Create")
	}
	a, err := r.start(env...)
	if err != nil {
		return err
	}
	if renewal {
		if _, err := r.waitSettled(a, "the agent to connect before the renewal"); err != nil {
			a.kill()
			return fmt.Errorf("%w\nagent output:\n%s", err, a.tail())
		}
		if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			a.kill()
			return err
		}
	}
	time.Sleep(time.Duration(rng.Int64N(int64(took * 5 / 4))))
	if a.exited() {
		return fmt.Errorf("dpsagent run exited by itself (%v)\nagent output:\n%s", a.waitErr, a.tail())
	}
	a.kill()
	points, err := crashReadKillPoints(trace)
	if err != nil {
		return err
	}
	last := "(before the first kill point)"
	if len(points) > 0 {
		last = "after " + points[len(points)-1].Name
	}
	r.lab.tally.step(scenario, last)
	m, stored, err := r.checkAfterKill()
	if err != nil {
		return fmt.Errorf("killed %s: %w", crashStepKind(last), err)
	}
	if renewal && m.Current == nil {
		return fmt.Errorf("killed %s, a renewal lost the current identity: %s", crashStepKind(last), jsonText(m))
	}
	serial, err := r.restartAndCheck(m, stored)
	if err != nil {
		return fmt.Errorf("killed %s: %w", crashStepKind(last), err)
	}
	switch {
	case m.Current == nil:
		r.lab.tally.count("outcome: "+scenario+": nothing committed; restart registered anew", 1)
	case before.Current == nil:
		r.lab.tally.count("outcome: "+scenario+": restart used the identity committed before the kill", 1)
	case strings.EqualFold(serial, before.Current.Serial):
		r.lab.tally.count("outcome: "+scenario+": restart used the old identity", 1)
	default:
		r.lab.tally.count("outcome: "+scenario+": restart used the new identity", 1)
	}
	return nil
}

// A shipped binary must hold nothing of the kill points: only the tagged
// build reads DPSAGENT_KILL_AT.
func TestCrashKillPointsNotShipped(t *testing.T) {
	shipped, tagged := buildBinaries(t).dpsagent, crashBinaries(t).dpsagent
	for _, c := range []struct {
		bin  string
		want bool
	}{{shipped, false}, {tagged, true}} {
		data, err := os.ReadFile(c.bin)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(data, []byte("DPSAGENT_KILL_AT")); got != c.want {
			t.Errorf("%s mentions DPSAGENT_KILL_AT: %t, want %t", c.bin, got, c.want)
		}
	}
}
