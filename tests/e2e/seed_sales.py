import numpy as np
import pandas as pd


def analyze_sales_data():
    # 创建示例销售数据
    data = {
        "date": pd.date_range("2023-01-01", periods=100),
        "sales": np.random.randint(100, 1000, 100),
        "region": np.random.choice(["North", "South", "East", "West"], 100),
    }
    df = pd.DataFrame(data)

    # 分析数据
    analysis = {
        "total_sales": df["sales"].sum(),
        "avg_sales": df["sales"].mean(),
        "sales_by_region": df.groupby("region")["sales"].sum().to_dict(),
        "daily_sales": df.groupby(df["date"].dt.date)["sales"].sum().to_dict(),
    }

    return analysis
