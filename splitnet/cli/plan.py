"""``splitnet plan MODEL --input 3xHxW --bandwidth 20Mbit/s --rtt 30ms --profile P.json
--rate-accuracy R.json``: which split point and codec to run on a link.

Every split point x codec of the rate-accuracy sweep, the whole model on the device
and the image sent as PNG/JPEG are costed from measured figures: the head on the
device (profile --measure-fps, or bench-head --json files given with --profile),
the codec's encode, the measured bytes per frame over the link (bytes * 8 /
bandwidth + RTT), the codec's decode and the tail on the server (the profile, or
--server-profile from profile --measure-tail on the server), and the metric drop.
Prints the ranked table; --json and --plot write the full list and the figure of
latency and FPS against bandwidth.
"""

from __future__ import annotations

import argparse
import sys

from splitnet._errors import ConfigError
from splitnet.cli import _args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "plan",
        help="rank split points x codecs and the baselines for a link, from measured figures",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _args.add_model_and_input(p)
    p.add_argument("--bandwidth", required=True, help="uplink bandwidth, e.g. 20Mbit/s, 2.5MB/s")
    p.add_argument("--rtt", default="0ms", help="round-trip time, e.g. 30ms (default 0ms)")
    p.add_argument(
        "--max-drop", type=float, metavar="POINTS", help="bound on the metric drop (points)"
    )
    p.add_argument(
        "--max-device-memory",
        type=float,
        metavar="MB",
        help="bound on the device's memory: head weights (FP16) + peak activations, 10^6 bytes",
    )
    p.add_argument(
        "--objective",
        choices=("latency", "fps"),
        default="latency",
        help="end-to-end latency of a frame, or pipelined FPS (the slowest stage); default latency",
    )
    p.add_argument(
        "--profile",
        required=True,
        type=_args.name_list,
        metavar="P.json[,BENCH.json...]",
        help="splitnet profile --measure-fps --json file; bench-head --json files after it "
        "replace the head time at their split point",
    )
    p.add_argument(
        "--rate-accuracy", required=True, metavar="R.json", help="rate-accuracy results.json"
    )
    p.add_argument(
        "--server-profile",
        metavar="S.json",
        help="splitnet profile --measure-tail cpu|cuda --json, run on the server "
        "(default: the tail times of --profile)",
    )
    p.add_argument(
        "--window",
        type=int,
        default=8,
        metavar="N",
        help="frames in flight (splitnet device --window; default 8): bounds the FPS by "
        "N / latency and sets a stream's latency; 0: no bound",
    )
    p.add_argument(
        "--server-delay",
        default="5ms",
        metavar="DURATION",
        help="the server's batching delay (serve --max-delay-ms; default 5ms)",
    )
    p.add_argument(
        "--source-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="the frame source's time per frame on the device (default 0)",
    )
    p.add_argument(
        "--shared-cores",
        type=float,
        metavar="N",
        help="device and server on one machine, computing on N cores: their compute adds up",
    )
    p.add_argument(
        "--head-threads",
        type=_args.positive_int,
        metavar="N",
        help="the OpenVINO threads the profile's heads were timed with (profile --head-threads); "
        "recorded in the plan file, whose daemon then runs its heads so",
    )
    p.add_argument(
        "--top", type=int, default=10, metavar="N", help="rows in the table (default 10)"
    )
    p.add_argument(
        "--json", metavar="FILE", help="write the ranked list to FILE; '-' prints only JSON"
    )
    p.add_argument("--plot", metavar="FILE.png", help="latency and FPS against bandwidth")
    p.add_argument(
        "--emit-plan",
        metavar="PLAN.json",
        help="write the plan file that splitnet device --plan runs: the candidates of --bundles "
        "with their cost terms",
    )
    p.add_argument(
        "--bundles", nargs="+", metavar="DIR", help="with --emit-plan: the bundles to run"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splitnet.plan import Pipeline, make_plan, parse_bandwidth, parse_duration

    bandwidth = parse_bandwidth(args.bandwidth)
    rtt = parse_duration(args.rtt)
    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise ConfigError(
            f"--plot writes a PNG file; give a name ending in .png, got {args.plot!r}"
        )
    if args.window < 0:
        raise ConfigError(f"--window must be >= 0, got {args.window}")
    if bool(args.emit_plan) != bool(args.bundles):
        raise ConfigError("--emit-plan and --bundles go together")
    pipeline = Pipeline(
        window=args.window or None,
        shared_cores=args.shared_cores,
        source_ms=args.source_ms,
        server_delay_ms=1000 * parse_duration(args.server_delay),
        head_threads=args.head_threads,
    )
    plan = make_plan(
        args.profile,
        args.rate_accuracy,
        bandwidth_bps=bandwidth,
        rtt_s=rtt,
        objective=args.objective,
        max_drop_points=args.max_drop,
        max_device_memory_mb=args.max_device_memory,
        server_profile=args.server_profile,
        model=args.model,
        input_shape=args.input,
        pipeline=pipeline,
    )
    plan_file = None
    if args.emit_plan:  # before any output: bundles the plan cannot run are an error
        from splitnet.plan import plan_file_from_plan

        plan_file = plan_file_from_plan(plan, args.bundles)
    if args.json == "-":
        print(plan.to_json())
    else:
        print(plan.format_table(top=args.top))
    if args.json and args.json != "-":
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(plan.to_json() + "\n")
        print(f"JSON: {args.json}", file=sys.stderr)
    if plan_file is not None:
        from splitnet.plan import write_plan_file

        write_plan_file(plan_file, args.emit_plan)
        n = len(plan_file.candidates)
        print(f"plan file: {args.emit_plan} ({n} candidates)", file=sys.stderr)
    if args.plot:
        from splitnet.plan import plot_plan

        plot_plan(plan, args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0
