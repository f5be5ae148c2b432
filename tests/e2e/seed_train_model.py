import numpy as np
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import train_test_split


def train_model():
    # 生成示例数据
    X = np.random.rand(100, 3)
    y = np.random.rand(100)

    # 分割数据
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2)

    # 训练模型
    model = LinearRegression()
    model.fit(X_train, y_train)

    # 评估模型
    score = model.score(X_test, y_test)

    return {"model_score": score, "coefficients": model.coef_.tolist(), "intercept": model.intercept_}
