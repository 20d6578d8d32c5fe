"""vmem's Streamlit app: `vmem app [MEM]` or `streamlit run app.py` (memory from $VMEM_MEMORY, else the sample)."""

import streamlit as st

from vmem_core import host
from vmem_core.cli import run_for_client

# This entry point ties the app to the command line: while the app holds a memory, `vmem add MEM ...` run elsewhere is
# sent here and runs on the app's open handle (vmem_core.host). The library itself never imports the CLI.
host.set_command_runner(run_for_client)

st.set_page_config(page_title="vmem: visual memory", page_icon=":material/photo_library:", layout="wide")

navigation = st.navigation(
    [
        st.Page("pages/classify.py", title="Classify", icon=":material/image_search:", default=True),
        st.Page("pages/memory.py", title="Memory", icon=":material/photo_library:"),
        st.Page("pages/map.py", title="Map", icon=":material/scatter_plot:"),
        st.Page("pages/unlearning.py", title="Unlearning", icon=":material/delete_sweep:"),
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/monitoring:"),
        st.Page("pages/curate.py", title="Curate", icon=":material/rule:"),
    ]
)
navigation.run()
