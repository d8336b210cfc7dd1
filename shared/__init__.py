"""dicomflow's domain library. Never imports azure.functions, functions/ or devhost/."""
