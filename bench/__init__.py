"""btfs benchmark harness (see bench.py); run with: bash bench/run.sh full|quick|scale"""
