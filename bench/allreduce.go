package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/loraft/loraft/internal/loopback"
	"github.com/loraft/loraft/trainer/allreduce"
)

// allreduceSizes are the benchmarked buffer sizes in bytes: a bert-base r=8
// adapter's gradients (300,295 fp32 values), 16 MB and 64 MB.
var allreduceSizes = []int{300295 * 4, 16 << 20, 64 << 20}

// itersFor is the number of timed steps per size: enough for a stable p50 on
// a shared machine (each run takes about half a minute).
func itersFor(bytes int) int {
	switch {
	case bytes <= 2<<20:
		return 100
	case bytes <= 16<<20:
		return 20
	}
	return 10
}

// RankTimes is one rank's timings of one algorithm and size, as
// `loraft bench allreduce-rank` prints them.
type RankTimes struct {
	Algo  string    `json:"algo"`
	Bytes int       `json:"bytes"`
	MS    []float64 `json:"ms"`
	// CPUMS is the process's user+system CPU time over the timed steps
	// (barriers included), per step.
	CPUMS float64 `json:"cpu_ms"`
}

// AllreduceRank is one rank process of the all-reduce benchmark: it times
// ring and naive all-reduces of every size with its peers, writes its
// timings to out as one JSON line, then reads release until EOF, so that it
// stays up until the orchestrator has seen every rank finish (a peer's last
// stream must not lose its server).
func AllreduceRank(ctx context.Context, cfg allreduce.Config, out io.Writer, release io.Reader) error {
	ring, err := allreduce.Listen(ctx, cfg)
	if err != nil {
		return err
	}
	defer ring.Close()
	var times []RankTimes
	step := uint64(0)
	barrier := make([]float32, 1)
	for _, size := range allreduceSizes {
		buf := make([]float32, size/4)
		for i := range buf {
			buf[i] = float32(i%97) * 0.01
		}
		for _, algo := range []string{"ring", "naive"} {
			fn := ring.AllReduce
			if algo == "naive" {
				fn = ring.NaiveAllReduce
			}
			rt := RankTimes{Algo: algo, Bytes: size}
			var cpu0 time.Duration
			for i := -2; i < itersFor(size); i++ { // two untimed warm-ups
				if i == 0 {
					cpu0 = cpuTime()
				}
				step++
				if err := ring.AllReduce(ctx, step, barrier); err != nil {
					return err
				}
				step++
				start := time.Now()
				if err := fn(ctx, step, buf); err != nil {
					return fmt.Errorf("%s all-reduce of %d bytes: %w", algo, size, err)
				}
				if i >= 0 {
					rt.MS = append(rt.MS, ms(time.Since(start)))
				}
			}
			rt.CPUMS = float64(cpuTime()-cpu0) / float64(time.Millisecond) / float64(len(rt.MS))
			times = append(times, rt)
		}
	}
	if err := json.NewEncoder(out).Encode(times); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, release)
	return nil
}

// AllreduceConfig tunes the all-reduce benchmark.
type AllreduceConfig struct {
	// Ranks lists the world sizes to measure (each at least 2).
	Ranks []int
	// ChunkBytes is every rank's allreduce.Config.ChunkBytes (0: the default).
	ChunkBytes int
	// TrainerJSON is the trainer benchmark's report, for the all-reduce's
	// share of a bert-base step ("" or absent: no share).
	TrainerJSON string
	// Progress, when set, receives the report so far after each rank
	// count, marked "partial": true (see TrainerConfig.Progress).
	Progress func(Report)
}

// Allreduce measures ring all-reduce against naive gather/broadcast, with
// ranks as separate processes on loopback, and raw TCP on loopback as the
// baseline.
func (r *Runner) Allreduce(ctx context.Context, cfg AllreduceConfig) (Report, error) {
	tcp, tcpCPU, err := tcpLoopbackGBps(1 << 30)
	if err != nil {
		return nil, fmt.Errorf("raw TCP baseline: %w", err)
	}
	r.logf("bench allreduce: raw TCP loopback %.2f GB/s, %.3f CPU s/GB\n", tcp, tcpCPU)
	stepS := 0.0
	if b, err := os.ReadFile(cfg.TrainerJSON); err == nil {
		stepS = trainerStepSeconds(b)
	}
	chunkBytes := cfg.ChunkBytes
	if chunkBytes == 0 {
		chunkBytes = allreduce.DefaultChunkBytes
	}
	var results []map[string]any
	shares := map[string]float64{}
	report := func() Report {
		return Report{
			"date": time.Now().UTC().Format(time.RFC3339), "loraft": r.Version, "cpus": runtime.NumCPU(),
			"units": "GB/s (10^9 bytes per second); busbw = algbw × 2(n−1)/n; ratio = busbw / tcp_gbps; " +
				"cpu_ms_per_step: user+system CPU of all ranks per step; cpu_s_per_gb_sent: that per GB all ranks send (2(n−1) × bytes per step, ring or naive); " +
				"tcp_cpu_s_per_gb: both ends of the raw TCP baseline per GB",
			"tcp_gbps": tcp, "tcp_cpu_s_per_gb": tcpCPU, "results": results,
			"chunk_bytes":                       chunkBytes,
			"bert_base_step_s":                  stepS,
			"allreduce_share_of_bert_base_step": shares,
			"note": fmt.Sprintf("ranks are separate processes on one %d-CPU machine: the n ranks and their gRPC stacks share its %d CPUs",
				runtime.NumCPU(), runtime.NumCPU()),
		}
	}
	for _, n := range cfg.Ranks {
		if n < 2 {
			return nil, fmt.Errorf("all-reduce of %d ranks: want at least 2", n)
		}
		r.logf("bench allreduce: %d ranks …\n", n)
		addrs, err := loopback.Addrs(n)
		if err != nil {
			return nil, err
		}
		rctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
		times, err := r.runAllreduceRanks(rctx, n, addrs, cfg.ChunkBytes)
		cancel()
		if err != nil {
			return nil, err
		}
		for i, rt := range times[0] {
			cpu := 0.0 // all ranks, per step
			for _, tr := range times {
				cpu += tr[i].CPUMS
			}
			moved := float64(2*(n-1)*rt.Bytes) / 1e9 // GB all ranks send per step, ring or naive
			p50 := percentile(rt.MS, 0.5)
			algbw := float64(rt.Bytes) / (p50 / 1000) / 1e9
			busbw := algbw * 2 * float64(n-1) / float64(n)
			results = append(results, map[string]any{"ranks": n, "algo": rt.Algo, "bytes": rt.Bytes, "iters": len(rt.MS),
				"time_ms_p50": p50, "time_ms_p99": percentile(rt.MS, 0.99),
				"algbw_gbps": algbw, "busbw_gbps": busbw, "ratio": busbw / tcp,
				"cpu_ms_per_step": cpu, "cpu_s_per_gb_sent": cpu / 1000 / moved})
			if rt.Algo == "ring" && rt.Bytes == allreduceSizes[0] && stepS > 0 {
				shares[strconv.Itoa(n)] = p50 / 1000 / stepS
			}
		}
		if cfg.Progress != nil {
			partial := report()
			partial["partial"] = true
			cfg.Progress(partial)
		}
	}
	return report(), nil
}

// tcpLoopbackGBps measures a plain Go sender/receiver pair on loopback. It
// also returns the CPU time both ends took per GB (10^9 bytes).
func tcpLoopbackGBps(total int) (gbps, cpuSPerGB float64, err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		_, err = io.Copy(io.Discard, conn)
		done <- err
	}()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return 0, 0, err
	}
	chunk := make([]byte, 1<<20)
	start, cpu0 := time.Now(), cpuTime()
	for sent := 0; sent < total; sent += len(chunk) {
		if _, err := conn.Write(chunk); err != nil {
			return 0, 0, err
		}
	}
	conn.Close()
	if err := <-done; err != nil {
		return 0, 0, err
	}
	gb := float64(total) / 1e9
	return gb / time.Since(start).Seconds(), (cpuTime() - cpu0).Seconds() / gb, nil
}

// runAllreduceRanks runs the n rank processes and returns every rank's
// timings, by rank. Ranks wait on stdin after the last step so that none
// exits while a peer's final stream still needs it; stdin is closed once
// rank 0 has reported or any rank has failed.
func (r *Runner) runAllreduceRanks(ctx context.Context, n int, addrs []string, chunkBytes int) ([][]RankTimes, error) {
	type exit struct {
		rank int
		err  error
	}
	exits := make(chan exit, n)
	var stdins []io.WriteCloser
	var errs []*bytes.Buffer
	type line struct {
		rank int
		b    []byte
	}
	reports := make(chan line, n)
	for rank := range n {
		cmd := r.Bin.Command(ctx, "bench", "allreduce-rank", "--rank", strconv.Itoa(rank), "--world", strconv.Itoa(n),
			"--peers", strings.Join(addrs, ","), "--chunk-bytes", strconv.Itoa(chunkBytes))
		eb := &bytes.Buffer{}
		cmd.Stderr = eb
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		go func() {
			b, _ := bufio.NewReader(out).ReadBytes('\n')
			reports <- line{rank, b}
			_, _ = io.Copy(io.Discard, out)
		}()
		stdins, errs = append(stdins, in), append(errs, eb)
		go func() { exits <- exit{rank, cmd.Wait()} }()
	}
	release := func() {
		for _, in := range stdins {
			in.Close()
		}
	}
	lines := make([][]byte, n)
	var failed error
	left := n // exits not collected yet
	for got := 0; got < n && failed == nil; {
		select {
		case l := <-reports:
			lines[l.rank] = l.b
			got++
		case e := <-exits:
			left--
			if e.err != nil {
				failed = fmt.Errorf("rank %d of %d: %w\n%s", e.rank, n, e.err, errs[e.rank])
			} else if lines[e.rank] == nil {
				failed = fmt.Errorf("rank %d of %d exited without results", e.rank, n)
			}
		}
	}
	release()
	for range left {
		if e := <-exits; e.err != nil && failed == nil {
			failed = fmt.Errorf("rank %d: %w\n%s", e.rank, e.err, errs[e.rank])
		}
	}
	if failed != nil {
		return nil, failed
	}
	times := make([][]RankTimes, n)
	for rank, l := range lines {
		if err := json.Unmarshal(bytes.TrimSpace(l), &times[rank]); err != nil {
			return nil, fmt.Errorf("rank %d printed no results: %w", rank, err)
		}
		if len(times[rank]) != len(times[0]) {
			return nil, fmt.Errorf("rank %d reported %d results, rank 0 %d", rank, len(times[rank]), len(times[0]))
		}
	}
	return times, nil
}

// trainerStepSeconds is the NF4 step time in a bench trainer report: its
// fp32 run's (the top-level go_samples_per_s), or else its bf16 run's, as
// gpu-check's cuda report has only bf16. 0 when the report has neither.
func trainerStepSeconds(report []byte) float64 {
	var tj map[string]any
	if json.Unmarshal(report, &tj) != nil {
		return 0
	}
	perS := num(tj["go_samples_per_s"])
	if bf, ok := tj["bf16"].(map[string]any); ok && perS <= 0 {
		perS = num(bf["go_nf4_samples_per_s"])
	}
	if perS <= 0 {
		return 0
	}
	return num(tj["batch"]) / perS
}
