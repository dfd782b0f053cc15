package coordinator

import (
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	pb "github.com/loraft/loraft/proto/coordinatorpb"
	"github.com/loraft/loraft/shard"
	"github.com/loraft/loraft/trainer/lora/loraconfig"
	"github.com/loraft/loraft/trainer/metrics"
)

// The coordinator checks every field of every request itself (it never
// relies on the CLI's checks), and the FSM checks every command again
// before it applies it, so a command refused there changes nothing. These
// are the bounds; the number of trials of a sweep is Config.MaxTrialsPerSweep.
const (
	// MaxNameLen bounds sweep, trial, trainer and coordinator names; a name
	// is letters, digits, '.', '_' and '-', starting with a letter or digit
	// (names become object-store keys: never "..", never a '/').
	MaxNameLen = 128
	// MaxSpecYAMLBytes bounds the sweep spec a launch carries.
	MaxSpecYAMLBytes = 1 << 20
	// DefaultMaxTrialsPerSweep is Config.MaxTrialsPerSweep's default.
	DefaultMaxTrialsPerSweep = 10000
	// MaxStep bounds a reported step when the trial's total steps are not
	// known (no train settings or no row count); a known total bounds it
	// tighter.
	MaxStep = 1 << 40
	// MaxEpochs and MaxBatchSize bound the train settings.
	MaxEpochs    = 10000
	MaxBatchSize = 1 << 16
	// MaxConcurrent bounds a sweep's max_concurrent (0: no limit).
	MaxConcurrent = 1 << 20
	// MaxReductionFactor bounds ASHA's η.
	MaxReductionFactor = 1000
	// MaxReasonBytes bounds a trial's recorded reason; a longer one
	// reported by a trainer is cut to it.
	MaxReasonBytes = 4096
	// maxAddrLen bounds addresses.
	maxAddrLen = 256
)

// ErrInvalidArgument is what every *ArgumentError matches with errors.Is.
var ErrInvalidArgument = errors.New("invalid argument")

// ArgumentError is one invalid field of a request or command: Field is its
// path as the request spells it ("sweep.trials[3].rank"), Msg the value and
// what was wanted ("4096, want 1..1024"). The API answers it InvalidArgument.
type ArgumentError struct {
	Field string
	Msg   string
}

func (e *ArgumentError) Error() string { return e.Field + ": " + e.Msg }

// Unwrap makes errors.Is(err, ErrInvalidArgument) true.
func (e *ArgumentError) Unwrap() error { return ErrInvalidArgument }

func argErr(field, format string, args ...any) error {
	return &ArgumentError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

var (
	namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	// idPattern also allows ':' and brackets: a trainer's default ID is
	// hostname-listen address ("gpu7-[::]:7500").
	idPattern = regexp.MustCompile(`^[A-Za-z0-9_:\[\]-][A-Za-z0-9._:\[\]-]*$`)
)

// checkName checks a required name.
func checkName(field, name string) error {
	switch {
	case name == "":
		return argErr(field, "required")
	case len(name) > MaxNameLen:
		return argErr(field, "%d bytes, want at most %d", len(name), MaxNameLen)
	case !namePattern.MatchString(name):
		return argErr(field, "%q: want letters, digits, '.', '_' and '-', starting with a letter or digit", name)
	}
	return nil
}

// checkID checks a required trainer or coordinator ID: a name that may
// also hold ':', '[' and ']', at most MaxNameLen bytes. IDs never become
// object-store keys.
func checkID(field, id string) error {
	switch {
	case id == "":
		return argErr(field, "required")
	case len(id) > MaxNameLen:
		return argErr(field, "%d bytes, want at most %d", len(id), MaxNameLen)
	case !idPattern.MatchString(id):
		return argErr(field, "%q: want letters, digits and '.', '_', '-', ':', '[', ']', not starting with '.'", id)
	}
	return nil
}

// checkAddr checks a required host:port.
func checkAddr(field, addr string) error {
	if addr == "" {
		return argErr(field, "required")
	}
	if len(addr) > maxAddrLen {
		return argErr(field, "%d bytes, want at most %d", len(addr), maxAddrLen)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return argErr(field, "%q: want host:port", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return argErr(field, "%q: port %q, want 0..65535", addr, port)
	}
	if host != "" && !namePattern.MatchString(host) && net.ParseIP(host) == nil {
		return argErr(field, "%q: host %q is neither a name nor an IP", addr, host)
	}
	return nil
}

// checkText checks free text: valid UTF-8, no NUL, at most max bytes.
func checkText(field, s string, max int) error {
	switch {
	case len(s) > max:
		return argErr(field, "%d bytes, want at most %d", len(s), max)
	case !utf8.ValidString(s):
		return argErr(field, "not valid UTF-8")
	}
	for _, r := range s {
		if r == 0 {
			return argErr(field, "contains a NUL byte")
		}
	}
	return nil
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// checkSweep checks a sweep to launch. maxTrials > 0 bounds its trials
// (the server passes Config.MaxTrialsPerSweep; the FSM, whose verdict must
// not depend on a node's configuration, passes 0). The fields the
// coordinator owns (trial states, generations, history, results) must be
// unset.
func checkSweep(sw *pb.Sweep, maxTrials int) error {
	if sw == nil {
		return argErr("sweep", "required")
	}
	if err := checkName("sweep.name", sw.GetName()); err != nil {
		return err
	}
	if n := len(sw.GetSpecYaml()); n > MaxSpecYAMLBytes {
		return argErr("sweep.spec_yaml", "%d bytes, want at most %d", n, MaxSpecYAMLBytes)
	}
	if d := sw.GetDatasetSha256(); d != "" {
		if err := checkName("sweep.dataset_sha256", d); err != nil {
			return err
		}
	}
	if sw.GetCancelled() {
		return argErr("sweep.cancelled", "true, want false (set by the coordinator)")
	}
	if p := sw.GetTrainersPerTrial(); p < 0 || p > maxTrainersPerTrial {
		return argErr("sweep.trainers_per_trial", "%d, want 1..%d (0: 1)", p, maxTrainersPerTrial)
	}
	if c := sw.GetMaxConcurrent(); c < 0 || c > MaxConcurrent {
		return argErr("sweep.max_concurrent", "%d, want 0..%d (0: no limit)", c, MaxConcurrent)
	}
	if m := sw.GetMetric(); m != "" {
		if _, err := metrics.ParseSelection(m); err != nil {
			return argErr("sweep.metric", "%v", err)
		}
	}
	if err := checkEarlyStopping(sw.GetEarlyStopping()); err != nil {
		return err
	}
	if err := checkTrain(sw.GetTrain(), sw.GetTrainersPerTrial()); err != nil {
		return err
	}
	if n := len(sw.GetTrials()); maxTrials > 0 && n > maxTrials {
		return argErr("sweep.trials", "%d trials, want at most %d", n, maxTrials)
	}
	names := make(map[string]int, len(sw.GetTrials()))
	for i, t := range sw.GetTrials() {
		if err := checkTrial(fmt.Sprintf("sweep.trials[%d]", i), t); err != nil {
			return err
		}
		if j, ok := names[t.GetName()]; ok {
			return argErr(fmt.Sprintf("sweep.trials[%d].name", i), "%s, the same as sweep.trials[%d]", t.GetName(), j)
		}
		names[t.GetName()] = i
	}
	return nil
}

func checkEarlyStopping(es *pb.EarlyStopping) error {
	if es == nil {
		return nil
	}
	if r := es.GetRule(); r != "median" && r != "asha" {
		return argErr("sweep.early_stopping.rule", "%q, want median or asha", r)
	}
	if g := es.GetGraceSteps(); g < 0 || g > MaxStep {
		return argErr("sweep.early_stopping.grace_steps", "%d, want 0..%d", g, int64(MaxStep))
	}
	if r := es.GetReductionFactor(); r != 0 && (r < 2 || r > MaxReductionFactor) {
		return argErr("sweep.early_stopping.reduction_factor", "%d, want 2..%d (0: 2)", r, MaxReductionFactor)
	}
	return nil
}

// checkTrain checks the train settings; a sweep without them (tests,
// benchmarks with simulated trainers) leaves them to the trainers.
func checkTrain(tr *pb.TrainSettings, perTrial int32) error {
	if tr == nil {
		return nil
	}
	const p = "sweep.train."
	if e := tr.GetEpochs(); e < 1 || e > MaxEpochs {
		return argErr(p+"epochs", "%d, want 1..%d", e, MaxEpochs)
	}
	if b := tr.GetBatchSize(); b < 1 || b > MaxBatchSize {
		return argErr(p+"batch_size", "%d, want 1..%d", b, MaxBatchSize)
	} else if perTrial > 1 && b < perTrial {
		return argErr(p+"batch_size", "%d is smaller than trainers_per_trial %d", b, perTrial)
	}
	if err := shard.CheckMaxLen(int(tr.GetMaxLen())); err != nil {
		return argErr(p+"max_len", "%v", err)
	}
	if e := tr.GetEvalEvery(); e < 0 {
		return argErr(p+"eval_every", "%d, want ≥ 0 (0: at the end)", e)
	}
	if c := tr.GetCheckpointEvery(); c < 1 {
		return argErr(p+"checkpoint_every", "%d, want ≥ 1", c)
	}
	if q := tr.GetQuant(); q != "nf4" && q != "fp32" {
		return argErr(p+"quant", "%q, want nf4 or fp32", q)
	}
	if tr.WarmupRatio != nil {
		if w := tr.GetWarmupRatio(); !(w >= 0 && w < 1) {
			return argErr(p+"warmup_ratio", "%v, want in [0, 1)", w)
		}
	}
	if _, err := shard.ParseRatios(tr.GetSplitRatios()); err != nil {
		return argErr(p+"split_ratios", "%v", err)
	}
	return checkTrainBase(tr)
}

// builtinConfigs are the model configs every trainer knows by name
// (model.LoadConfig's; the coordinator cannot import it, since it links
// libtorch, and a test in trainer/agent keeps the two equal).
var builtinConfigs = []string{"base", "bert-base-uncased", "tiny"}

// BuiltinConfigs returns the model config names a sweep's train.config may
// hold: anything else would be a path opened on every trainer.
func BuiltinConfigs() []string { return slices.Clone(builtinConfigs) }

// sha256Pattern is a content address: 64 lowercase hex digits.
var sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// maxBaseNameLen bounds train.base_name (checkpoint.MaxBaseNameBytes).
const maxBaseNameLen = 256

// checkTrainBase checks what names the sweep's base. Nothing from the
// network names a path on a trainer (DESIGN invariant 9): a config.json and
// weights travel through the store, named by base_sha256, which `sweep
// launch` uploads; train.config may only name a built-in config, and
// train.base (a directory, hub id or file on the launcher) must be gone.
func checkTrainBase(tr *pb.TrainSettings) error {
	const p = "sweep.train."
	if b := tr.GetBase(); b != "" {
		return argErr(p+"base", "%s: want none; sweep launch resolves the base on its machine, uploads it to the store and names it by base_sha256, never opened as a path or hub id on the trainers", quoteCut(b))
	}
	if c := tr.GetConfig(); c != "" && !slices.Contains(builtinConfigs, c) {
		return argErr(p+"config", "%s: want a built-in config (%s) or none; a config.json is uploaded with the base (base_sha256) by sweep launch, never opened as a path on the trainers",
			quoteCut(c), strings.Join(builtinConfigs, ", "))
	}
	if w := tr.GetWeights(); w != "" {
		return argErr(p+"weights", "%s: want none; weights are uploaded to the store by sweep launch and named by base_sha256, never opened as a path on the trainers", quoteCut(w))
	}
	if b := tr.GetBaseSha256(); b != "" && !sha256Pattern.MatchString(b) {
		return argErr(p+"base_sha256", "%s: want 64 lowercase hex digits (or none for a random-init base)", quoteCut(b))
	}
	n := tr.GetBaseName()
	if err := checkText(p+"base_name", n, maxBaseNameLen); err != nil {
		return err
	}
	if strings.ContainsFunc(n, unicode.IsControl) {
		return argErr(p+"base_name", "%s holds a control character", quoteCut(n))
	}
	return nil
}

// quoteCut quotes s (escaping control characters) cut to 64 bytes, for
// echoing a refused value.
func quoteCut(s string) string {
	if len(s) <= 64 {
		return strconv.Quote(s)
	}
	return strconv.Quote(strings.ToValidUTF8(s[:64], "")) + "…"
}

// checkTrial checks one trial of a sweep to launch.
func checkTrial(field string, t *pb.Trial) error {
	if t == nil {
		return argErr(field, "required")
	}
	if err := checkName(field+".name", t.GetName()); err != nil {
		return err
	}
	if i := t.GetIndex(); i < 0 {
		return argErr(field+".index", "%d, want ≥ 0", i)
	}
	if r := t.GetRank(); r < 1 || r > loraconfig.MaxRank {
		return argErr(field+".rank", "%d, want 1..%d", r, loraconfig.MaxRank)
	}
	if a := t.GetAlpha(); loraconfig.CheckAlpha(a) != nil {
		return argErr(field+".alpha", "%v, want a finite number > 0", a)
	}
	if d := t.GetLoraDropout(); loraconfig.CheckDropout(d) != nil {
		return argErr(field+".lora_dropout", "%v, want in [0, 1)", d)
	}
	if lr := t.GetLearningRate(); !(lr >= 0 && lr <= 1) {
		return argErr(field+".learning_rate", "%v, want in [0, 1] (0: the trainer's default)", lr)
	}
	if tm := t.GetTargetModules(); tm != "" {
		if err := checkText(field+".target_modules", tm, 1024); err != nil {
			return err
		}
		if err := loraconfig.CheckTargets(loraconfig.ParseTargets(tm)); err != nil {
			return argErr(field+".target_modules", "%q: %v", tm, err)
		}
	}
	// What the coordinator records about a trial is not the client's to set.
	owned := []struct {
		name string
		set  bool
	}{
		{"state", t.GetState() != pb.TrialState_TRIAL_STATE_UNSPECIFIED && t.GetState() != pb.TrialState_TRIAL_STATE_PENDING},
		{"reason", t.GetReason() != ""},
		{"generation", t.GetGeneration() != 0},
		{"attempts", t.GetAttempts() != 0},
		{"trainers", len(t.GetTrainers()) != 0},
		{"checkpoint_step", t.GetCheckpointStep() != 0},
		{"history", len(t.GetHistory()) != 0},
		{"best_metric", t.GetHasMetric() || t.GetBestMetric() != 0},
		{"result", t.GetResult() != nil},
		{"started_unix_ms", t.GetStartedUnixMs() != 0},
		{"finished_unix_ms", t.GetFinishedUnixMs() != 0},
		{"running_ms", t.GetRunningMs() != 0},
	}
	for _, o := range owned {
		if o.set {
			return argErr(field+"."+o.name, "set, want unset (the coordinator records it)")
		}
	}
	return nil
}

// checkDataset checks the dataset record a launch carries (nil: none).
func checkDataset(d *pb.Dataset) error {
	if d == nil {
		return nil
	}
	if d.GetSha256() == "" && d.GetName() == "" && d.GetSize() == 0 && d.GetRows() == 0 {
		return nil
	}
	if err := checkName("dataset.sha256", d.GetSha256()); err != nil {
		return err
	}
	if err := checkText("dataset.name", d.GetName(), 1024); err != nil {
		return err
	}
	if s := d.GetSize(); s < 0 {
		return argErr("dataset.size", "%d, want ≥ 0", s)
	}
	if r := d.GetRows(); r < 0 || r > MaxStep {
		return argErr("dataset.rows", "%d, want 0..%d", r, int64(MaxStep))
	}
	return nil
}

// totalSteps bounds the steps of sw's trials: epochs × ⌈rows / batch⌉ when
// the train settings and the dataset's row count are known (a trial trains
// on a part of the rows), else MaxStep.
func totalSteps(f *fsm, sw *pb.Sweep) int64 {
	tr := sw.GetTrain()
	rows := f.datasets[sw.GetDatasetSha256()].GetRows()
	if tr.GetEpochs() < 1 || tr.GetBatchSize() < 1 || rows < 1 {
		return MaxStep
	}
	perEpoch := (rows + int64(tr.GetBatchSize()) - 1) / int64(tr.GetBatchSize())
	if perEpoch > MaxStep/int64(tr.GetEpochs()) {
		return MaxStep
	}
	return perEpoch * int64(tr.GetEpochs())
}

// sweepOf is the sweep trial t belongs to, or nil.
func sweepOf(f *fsm, t *pb.Trial) *pb.Sweep {
	for _, sw := range f.sweeps {
		for _, x := range sw.GetTrials() {
			if x == t {
				return sw
			}
		}
	}
	return nil
}

// checkReport checks a checkpoint report's step and metric against the
// trial's sweep (f is read, not changed).
func checkReport(f *fsm, m *pb.RecordCheckpoint) error {
	if err := checkName("trial", m.GetTrial()); err != nil {
		return err
	}
	if m.GetHasMetric() && !finite(m.GetMetric()) {
		return argErr("metric", "%v, want a finite number", m.GetMetric())
	}
	bound := int64(MaxStep)
	if t, ok := f.trials[m.GetTrial()]; ok {
		if sw := sweepOf(f, t); sw != nil {
			bound = totalSteps(f, sw)
		}
	}
	if s := m.GetStep(); s < 0 || s > bound {
		return argErr("step", "%d, want 0..%d (the trial's total steps, or the limit when unknown)", s, bound)
	}
	return nil
}

// checkResult checks a trial's end report.
func checkResult(r *pb.TrialResult) error {
	if r == nil {
		return nil
	}
	for _, x := range []struct {
		name string
		v    float64
	}{{"val_macro_f1", r.GetValMacroF1()}, {"val_accuracy", r.GetValAccuracy()}, {"test_macro_f1", r.GetTestMacroF1()},
		{"test_accuracy", r.GetTestAccuracy()}, {"temperature", r.GetTemperature()}, {"val_ece", r.GetValEce()}, {"final_loss", r.GetFinalLoss()}} {
		if !finite(x.v) {
			return argErr("result."+x.name, "%v, want a finite number", x.v)
		}
	}
	if s := r.GetSteps(); s < 0 || s > MaxStep {
		return argErr("result.steps", "%d, want 0..%d", s, int64(MaxStep))
	}
	if w := r.GetWallMs(); w < 0 {
		return argErr("result.wall_ms", "%d, want ≥ 0", w)
	}
	return nil
}

// cutReason shortens a reason to MaxReasonBytes, on a rune boundary.
func cutReason(s string) string {
	if len(s) <= MaxReasonBytes {
		return s
	}
	const more = " …"
	n := MaxReasonBytes - len(more)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + more
}

// progressOK reports whether live progress is sane enough to show: finite
// numbers, no negative counts. A trainer whose loss diverged to NaN keeps
// its lease; its progress is just not shown.
func progressOK(p *pb.Progress) bool {
	return finite(p.GetLoss()) && finite(p.GetMetric()) && p.GetStep() >= 0 && p.GetSteps() >= 0 &&
		p.GetEpoch() >= 0 && p.GetEtaMs() >= 0 && p.GetStep() <= MaxStep && p.GetSteps() <= MaxStep &&
		len(p.GetWarning()) <= MaxWarningBytes && utf8.ValidString(p.GetWarning())
}

// MaxWarningBytes bounds a progress warning.
const MaxWarningBytes = 512

// checkRing checks the trainers of an assignment: 1..maxTrainersPerTrial
// distinct names.
func checkRing(ids []string) error {
	if len(ids) == 0 || len(ids) > maxTrainersPerTrial {
		return argErr("trainers", "%d trainers, want 1..%d", len(ids), maxTrainersPerTrial)
	}
	seen := make(map[string]bool, len(ids))
	for i, id := range ids {
		field := fmt.Sprintf("trainers[%d]", i)
		if err := checkID(field, id); err != nil {
			return err
		}
		if seen[id] {
			return argErr(field, "%s listed twice", id)
		}
		seen[id] = true
	}
	return nil
}

// checkTrainer checks a trainer to register.
func checkTrainer(tr *pb.TrainerRecord) error {
	if err := checkID("trainer.id", tr.GetId()); err != nil {
		return err
	}
	return checkAddr("trainer.address", tr.GetAddress())
}

// checkMember checks a coordinator's record; the API address is required
// when needAPI is set (AddVoter) and optional in the FSM.
func checkMember(m *pb.Member, needAPI bool) error {
	if err := checkID("member.id", m.GetId()); err != nil {
		return err
	}
	if err := checkAddr("member.raft_address", m.GetRaftAddress()); err != nil {
		return err
	}
	if m.GetApiAddress() == "" && !needAPI {
		return nil
	}
	return checkAddr("member.api_address", m.GetApiAddress())
}
