cd /work/main
export PYTHONPATH=/work/snap54/src HF_HUB_OFFLINE=1 DPSYNTH_LEDGER=/work/runs/s54/mem/ledger-kept16.sqlite OMP_NUM_THREADS=2
. .venv/bin/activate
OUT=/work/runs/s54/mem/kept1000
python -m dpsynth.cli frontier --config /work/snap54/bench/frontier_amazon_cellphones_5k_gemma.yaml \
   --out $OUT --eps 4,8,inf frontier.real_all=false train.init_adapter=/work/runs/gemma-home-ascii/no_dp/adapter \
   frontier.n_synthetic=1000 > /work/runs/s54/mem/kept1000.out 2>&1 &
PID=$!
while kill -0 $PID 2>/dev/null; do echo "$(date +%H:%M:%S) $(ps -o rss= -p $PID)"; sleep 3; done > /work/runs/s54/mem/kept1000.rss
echo done
