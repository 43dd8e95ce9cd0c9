# usage: bash full.sh TAG [ENV...]: eps 4, 8, inf of the Gemma config of record at full training, N = 200
TAG=$1; shift
cd /work/main
export PYTHONPATH=/work/snap54/src HF_HUB_OFFLINE=1 DPSYNTH_LEDGER=/work/runs/s54/mem/ledger-$TAG.sqlite OMP_NUM_THREADS=2
for kv in "$@"; do export "$kv"; done
. .venv/bin/activate
OUT=/work/runs/s54/mem/$TAG
rm -rf $OUT
python -m dpsynth.cli frontier --config /work/snap54/bench/frontier_amazon_cellphones_5k_gemma.yaml \
   --out $OUT --eps 4,8,inf frontier.real_all=false train.init_adapter=/work/runs/gemma-home-ascii/no_dp/adapter \
   frontier.n_synthetic=200 --quiet > /work/runs/s54/mem/$TAG.out 2>&1 &
PID=$!
while kill -0 $PID 2>/dev/null; do echo "$(date +%H:%M:%S) $(ps -o rss= -p $PID)"; sleep 3; done > /work/runs/s54/mem/$TAG.rss
echo done
